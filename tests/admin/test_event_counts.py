"""stripe_event_counts follows stripe_events through the triggers of migration 0011 — inserts, status changes and
deletes, by the ORM, bulk SQL or the webhook endpoint's own insert — so the dashboard's events by status always
equal a live count, and the kept rows a recount from scratch; a delivery in progress holds no other back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from app.models import StripeEvent
from app.models.stripe_event import StripeEventCount
from app.services.reporting import webhook_status_counts
from app.services.webhooks import mark, record
from tests.admin.conftest import days_ago

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0011_stripe_event_counts.py"


def migration():
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def live() -> dict[str, int]:
    """The events by status, counted from the table itself."""
    return dict(db.session.execute(sa.select(StripeEvent.status, sa.func.count()).group_by(StripeEvent.status)).all())


def kept_rows() -> set[tuple]:
    """The kept rows, the zeros left by changes that cancelled out dropped."""
    count = StripeEventCount
    return {
        tuple(r)
        for r in db.session.execute(sa.select(count.status, count.shard, count.events).where(count.events != 0))
    }


def recounted() -> set[tuple]:
    """The same rows rebuilt by the migration's backfill over the whole of stripe_events (then rolled back)."""
    db.session.execute(sa.delete(StripeEventCount))
    db.session.execute(sa.text(migration().backfill(db.engine.dialect.name)))
    rows = kept_rows()
    db.session.rollback()
    return rows


def assert_counts_follow_the_rows() -> None:
    db.session.commit()
    assert webhook_status_counts() == live()
    assert kept_rows() == recounted()


def new_event(event_id: str, status: str = "processed", days: float = 0) -> StripeEvent:
    return StripeEvent(
        id=event_id,
        type="invoice.payment_succeeded",
        stripe_created=days_ago(days),
        received_at=days_ago(days),
        status=status,
        attempts=1,
        payload={"id": event_id},
    )


def webhook(event_id: str) -> dict:
    """An event as the endpoint records it (the shape `record` reads)."""
    return {"id": event_id, "type": "customer.subscription.updated", "created": 1_790_000_000, "livemode": False}


#: Last characters (shards) and statuses of the events the ORM inserts.
ORM_EVENTS = (("a", "received"), ("B", "processed"), ("3", "failed"), ("x", "ignored"), ("Q", "processed"))


def test_the_kept_counts_equal_a_live_count_after_every_kind_of_write(app):
    with app.app_context():
        assert webhook_status_counts() == {} and kept_rows() == set()
        # ORM inserts, several statuses and shards (the shard is the id's last character).
        db.session.add_all([new_event(f"evt_orm{i}{c}", status) for i, (c, status) in enumerate(ORM_EVENTS)])
        assert_counts_follow_the_rows()
        # The endpoint's insert: settled at once, recorded then marked, and a duplicate (ON CONFLICT DO NOTHING).
        record(webhook("evt_hookA"), settle=True)
        record(webhook("evt_hookB"))
        mark("evt_hookB", status="failed", attempts=1, error="OperationalError")
        assert_counts_follow_the_rows()
        before = kept_rows()
        assert record(webhook("evt_hookA"), settle=True) == ("processed", 1)
        assert_counts_follow_the_rows()
        assert kept_rows() == before
        # Bulk SQL: an INSERT … SELECT of many rows is one aggregated upsert.
        db.session.execute(
            sa.text(
                "INSERT INTO stripe_events (id, type, stripe_created, livemode, received_at, status, attempts, payload) "
                "SELECT 'evt_bulk' || g, 'customer.updated', now(), false, now(), "
                "CASE WHEN g % 7 = 0 THEN 'failed' WHEN g % 3 = 0 THEN 'ignored' ELSE 'processed' END, 1, '{}' "
                "FROM generate_series(1, 500) AS g"
            )
        )
        assert_counts_follow_the_rows()
        # Status changes: the ORM (a replay that worked), then an operator's bulk fix, then back.
        replayed = db.session.get(StripeEvent, "evt_hookB")
        replayed.status, replayed.attempts = "processed", 2
        assert_counts_follow_the_rows()
        db.session.execute(sa.update(StripeEvent).where(StripeEvent.status == "failed").values(status="received"))
        db.session.execute(
            sa.update(StripeEvent).where(StripeEvent.id.like("evt_bulk1%")).values(status="failed", attempts=5)
        )
        assert_counts_follow_the_rows()
        # Deletes: one row by the ORM, then a bulk prune of old events.
        db.session.delete(db.session.get(StripeEvent, "evt_orm0a"))
        assert_counts_follow_the_rows()
        db.session.execute(sa.update(StripeEvent).values(received_at=days_ago(100)).where(StripeEvent.id.like("%5")))
        db.session.execute(sa.delete(StripeEvent).where(StripeEvent.received_at < days_ago(90)))
        assert_counts_follow_the_rows()
        assert sum(webhook_status_counts().values()) == db.session.scalar(sa.select(sa.func.count(StripeEvent.id)))
        assert len({shard for _status, shard, _n in kept_rows()}) > 8  # spread over the shards


def test_an_update_that_keeps_the_status_writes_nothing(app):
    with app.app_context():
        db.session.add(new_event("evt_steady", "failed"))
        db.session.commit()
        written = db.session.scalar(sa.text("SELECT xmin::text FROM stripe_event_counts"))
        row = db.session.get(StripeEvent, "evt_steady")
        row.attempts, row.error, row.status = 2, "still down", "failed"  # a failed replay
        db.session.commit()
        assert db.session.scalar(sa.text("SELECT xmin::text FROM stripe_event_counts")) == written


def test_a_delivery_in_progress_holds_no_other_back(app):
    """The first delivery's transaction stays open (its handler running) while a second event is recorded: the
    second insert does not wait for the first commit."""
    with app.app_context():
        with db.engine.connect() as first, db.engine.connect() as second:
            first.execute(sa.insert(StripeEvent).values(**columns_of(new_event("evt_slowA"))))
            second.execute(sa.text("SET lock_timeout = '3s'"))
            second.execute(sa.insert(StripeEvent).values(**columns_of(new_event("evt_quickB"))))
            second.commit()
            first.commit()
        assert webhook_status_counts() == live() == {"processed": 2}


def columns_of(event: StripeEvent) -> dict:
    return {c.key: getattr(event, c.key) for c in StripeEvent.__table__.columns if getattr(event, c.key) is not None}


def test_the_counts_follow_the_rows_on_sqlite(tmp_path, stripe_emulator):
    """The fresh-clone default: row-level triggers on SQLite, and the downgrade removes them with the table."""
    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "STRIPE_API_BASE": stripe_emulator.url,
        }
    )
    with app.app_context():
        upgrade(revision="0010_billing_contact")
        db.session.add_all([new_event("evt_old1"), new_event("evt_old2", "failed", days=3)])
        db.session.commit()
        upgrade()  # the backfill counts what was there
        assert webhook_status_counts() == live() == {"processed": 1, "failed": 1}
        record(webhook("evt_hookA"), settle=True)
        record(webhook("evt_hookB"))
        db.session.add(new_event("evt_new3", "ignored"))
        db.session.commit()
        db.session.get(StripeEvent, "evt_old2").status = "processed"
        db.session.delete(db.session.get(StripeEvent, "evt_old1"))
        db.session.commit()
        assert webhook_status_counts() == live() == {"processed": 2, "received": 1, "ignored": 1}
        assert kept_rows() == recounted()
        downgrade(revision="0010_billing_contact")
        assert "stripe_event_counts" not in sa.inspect(db.engine).get_table_names()
        db.session.add(new_event("evt_after"))  # no trigger left behind
        db.session.commit()
        downgrade(revision="base")
