"""`flask stripe replay-events` runs recorded events' handlers again and says it is idempotent: applying every event
of a checkout a second time adds no audit entry and counts no checkout again (a second `checkout.completed` row per
session showed in the admin dashboard's audit list)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, StripeEvent
from app.services import metrics
from tests.webhooks.test_emulator_events import subscribe


def trail(app, user_id: int) -> list[tuple[str, dict]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(AuditLog.action, AuditLog.details).where(AuditLog.user_id == user_id).order_by(AuditLog.id)
        ).all()
        db.session.remove()
    return [tuple(row) for row in rows]


def test_replaying_every_event_of_a_checkout_changes_nothing(seeded, stripe_emulator, webhooks_to_app, runner):
    user_id = subscribe(seeded, stripe_emulator)
    before = trail(seeded, user_id)
    assert [action for action, _ in before].count("checkout.completed") == 1
    completed = metrics.BILLING_CHECKOUT_SESSIONS_COMPLETED._value.get()
    with seeded.app_context():
        recorded = db.session.scalar(sa.select(sa.func.count()).select_from(StripeEvent))
        db.session.remove()

    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = runner.invoke(args=["stripe", "replay-events", "--since", since])

    assert result.exit_code == 0, result.output
    assert f"Replayed {recorded} event(s), 0 failed." in result.output
    assert "✓" in result.output and "checkout.session.completed: processed" in result.output
    assert trail(seeded, user_id) == before
    assert metrics.BILLING_CHECKOUT_SESSIONS_COMPLETED._value.get() == completed
    assert "0 had drifted" in runner.invoke(args=["stripe", "sync", "--all"]).output
