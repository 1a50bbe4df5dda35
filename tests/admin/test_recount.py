"""`flask admin recount` rebuilds the dashboard's maintained counts from their tables, and nothing else: the README's
remedy for a TRUNCATE by hand. Its earlier remedy (`flask db downgrade 0006_user_conversions && flask db upgrade`)
dropped the tables created since (log-in sessions, confirmed emails, alerts) with their rows."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.services.reporting import dashboard
from tests.admin.conftest import demo_book
from tests.admin.test_daily_counts import maintained, recounted
from tests.factories import UserFactory


def event_counts() -> dict[str, int]:
    return dict(
        db.session.execute(sa.text("SELECT status, sum(events) FROM stripe_event_counts GROUP BY status")).all()
    )


def table_rows() -> dict[str, int]:
    tables = ("users", "user_subscriptions", "audit_logs", "stripe_events", "auth_sessions", "verified_emails")
    return {table: db.session.scalar(sa.text(f"SELECT count(*) FROM {table}")) for table in tables}


def test_recount_rebuilds_the_counts_after_a_truncate_and_keeps_every_table(seeded, runner):
    with seeded.app_context():
        UserFactory(email="first@example.com")  # demo_book borrows its password hash
    demo_book(seeded)
    with seeded.app_context():
        db.session.execute(
            sa.text(
                "INSERT INTO verified_emails (user_id, email, verified_at) SELECT id, email, now() FROM users LIMIT 1"
            )
        )
        db.session.commit()
        expected_events = dict(
            db.session.execute(sa.text("SELECT status, count(*) FROM stripe_events GROUP BY status")).all()
        )
        # By hand: the audit trail truncated (no trigger fires), a count row lost, another wrong.
        db.session.execute(sa.text("TRUNCATE audit_logs"))
        db.session.execute(sa.text("DELETE FROM daily_counts WHERE metric = 'signups'"))
        db.session.execute(sa.text("UPDATE stripe_event_counts SET events = events + 5"))
        db.session.commit()
        assert maintained() != recounted()
        tables_before = table_rows()

    result = runner.invoke(args=["admin", "recount"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "✓ Dashboard counts rebuilt from the tables"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "daily_counts",
        "daily_subscription_changes",
        "stripe_event_counts",
    ]
    with seeded.app_context():
        assert maintained() == recounted()
        assert event_counts() == expected_events
        assert table_rows() == tables_before  # nothing but the counts changed
        assert all(c.recent == 0 for c in dashboard().conversions)  # the truncated audit trail counts nothing
