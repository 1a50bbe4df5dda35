"""Webhook events recorded but not applied yet (status `received`): their number and the oldest one's age on
`/metrics`, in `flask queue status` and in `flask doctor`, read from the real PostgreSQL cheaply at any table size."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import StripeEvent, utcnow
from app.services.doctor import check_webhook_backlog
from app.services.queue_health import (
    EVENT_AGE_ALERT_SECONDS,
    OLDEST_RECEIVED_EVENT,
    RECEIVED_EVENTS,
    queue_health,
)
from tests.ops.test_metrics import scrape


def add_event(event_id: str, status: str, waited: timedelta) -> None:
    """A recorded event in `status`, received `waited` ago (written directly, as the webhook path records it)."""
    received = utcnow() - waited
    db.session.add(
        StripeEvent(
            id=event_id,
            type="customer.subscription.updated",
            stripe_created=received,
            received_at=received,
            status=status,
            attempts=0 if status == "received" else 1,
            payload={"id": event_id, "type": "customer.subscription.updated", "data": {"object": {}}},
        )
    )


def add_backlog(app) -> None:
    """Two events waiting (10 and 1 minutes), and older events applied, ignored or failed that do not wait."""
    with app.app_context():
        add_event("evt_waiting_10_min", "received", timedelta(minutes=10))
        add_event("evt_waiting_1_min", "received", timedelta(minutes=1))
        add_event("evt_applied", "processed", timedelta(hours=2))
        add_event("evt_ignored", "ignored", timedelta(hours=3))
        add_event("evt_failed", "failed", timedelta(hours=4))
        db.session.commit()


def queue_status(app, runner) -> list[str]:
    """The lines of `flask queue status`."""
    with app.app_context():  # as `flask` pushes it for every command
        result = runner.invoke(args=["queue", "status"])
    assert result.exit_code == 0, result.exception
    return result.output.splitlines()


def seconds_in(line: str, pattern: str) -> int:
    """The whole seconds `pattern` (a regex with one `(\\d+)`) reads in `line`; fails when it does not match."""
    found = re.fullmatch(pattern, line)
    assert found, line
    return int(found.group(1))


def test_no_waiting_event_is_zero_everywhere(app, client, runner, seeded):
    with app.app_context():
        add_event("evt_applied", "processed", timedelta(hours=2))
        db.session.commit()
        health = queue_health()
        [check] = check_webhook_backlog()
    assert (health.waiting_events, health.oldest_event_seconds, health.events_ok) == (0, 0.0, True)
    samples = scrape(client)
    assert samples["stripe_webhook_events_waiting"] == 0
    assert samples["stripe_webhook_events_oldest_waiting_seconds"] == 0
    assert "✓ Webhook events: 0 waiting to be applied; oldest 0 s" in queue_status(app, runner)
    assert check.ok and check.lines() == ["✓ Webhook events waiting — none: every recorded event is applied"]


def test_waiting_events_show_on_metrics_with_the_oldest_age(app, client, seeded):
    add_backlog(app)
    samples = scrape(client)
    assert samples["stripe_webhook_events_waiting"] == 2
    assert 600 <= samples["stripe_webhook_events_oldest_waiting_seconds"] < 660


def test_queue_status_marks_the_events_line_once_the_oldest_passes_the_alert_threshold(app, runner, seeded):
    add_backlog(app)
    lines = queue_status(app, runner)
    assert lines[0].startswith("✓ Task queue: ")  # mail is not what waits
    assert 600 <= seconds_in(lines[1], r"✗ Webhook events: 2 waiting to be applied; oldest (\d+) s") < 660

    with app.app_context():  # the 10-minute event applied: one left, a minute old, under the threshold
        db.session.execute(
            sa.update(StripeEvent).where(StripeEvent.id == "evt_waiting_10_min").values(status="processed")
        )
        db.session.commit()
    lines = queue_status(app, runner)
    assert 60 <= seconds_in(lines[1], r"✓ Webhook events: 1 waiting to be applied; oldest (\d+) s") < 120


def test_doctor_fails_on_an_event_waiting_past_the_threshold_and_says_how_to_apply_it(app, seeded):
    add_backlog(app)
    with app.app_context():
        [check] = check_webhook_backlog()
    assert not check.ok
    head, fix = check.lines()
    waited = seconds_in(
        head,
        r"✗ Webhook events waiting — 2 recorded and not applied yet, the oldest for (\d+) s: entitlements lag "
        r"behind Stripe",
    )
    assert 600 <= waited < 660
    assert fix.startswith("    fix: start `flask queue worker`")
    since = re.search(r"`flask stripe replay-events --since (\S+)`", fix)
    assert since, fix
    # Whole minutes, a minute or two before the oldest waiting event: the replay takes it in.
    oldest = utcnow() - timedelta(minutes=10)
    assert (
        oldest - timedelta(minutes=2, seconds=5) <= datetime.fromisoformat(since.group(1)).replace(tzinfo=UTC) < oldest
    )


def test_doctor_passes_events_waiting_under_the_threshold(app, seeded):
    with app.app_context():
        add_event("evt_just_received", "received", timedelta(seconds=EVENT_AGE_ALERT_SECONDS - 60))
        db.session.commit()
        [check] = check_webhook_backlog()
    assert check.ok
    [line] = check.lines()
    assert 240 <= seconds_in(line, r"✓ Webhook events waiting — 1 recorded and not applied yet, the oldest for (\d+) s")


def test_the_figures_read_an_index_and_the_kept_counts_not_the_events(app, seeded):
    """Among 200,000 applied events: the oldest waiting one is the first entry of ix_stripe_events_status_received_at
    (an index scan reading a few pages), the count a few rows of stripe_event_counts; stripe_events is never scanned."""
    with app.app_context():
        db.session.execute(
            sa.text(
                "INSERT INTO stripe_events (id, type, livemode, stripe_created, received_at, payload, status, attempts) "
                "SELECT 'evt_bulk_' || g, 'invoice.paid', false, now() - g * interval '1 second', "
                "now() - g * interval '1 second', '{}'::jsonb, 'processed', 1 FROM generate_series(1, 200000) AS g"
            )
        )
        add_event("evt_waiting_10_min", "received", timedelta(minutes=10))
        db.session.commit()
        db.session.execute(sa.text("ANALYZE stripe_events"))
        db.session.execute(sa.text("ANALYZE stripe_event_counts"))
        plans = {}
        for name, subquery in (("oldest", OLDEST_RECEIVED_EVENT), ("count", RECEIVED_EVENTS)):
            sql = str(sa.select(subquery).compile(db.engine, compile_kwargs={"literal_binds": True}))
            plans[name] = "\n".join(row[0] for row in db.session.execute(sa.text("EXPLAIN " + sql)))
        health = queue_health()
    assert "Index Only Scan using ix_stripe_events_status_received_at on stripe_events" in plans["oldest"], plans
    assert "Seq Scan" not in plans["oldest"], plans["oldest"]
    assert "stripe_events " not in plans["count"] and "stripe_event_counts" in plans["count"], plans["count"]
    assert health.waiting_events == 1 and 600 <= health.oldest_event_seconds < 660
