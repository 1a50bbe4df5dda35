"""The fresh-clone default: the migrations build the schema on SQLite, and times come back timezone-aware."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from app.models import User, UserSubscription
from app.services.catalog import seed_plans_from_config
from tests.webhooks.signing import post_event
from tests.webhooks.test_stripe_docs_events import CUSTOMER, DOCS_PRICE, load


def test_migrations_and_aware_times_on_sqlite(tmp_path, stripe_emulator):
    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "STRIPE_API_BASE": stripe_emulator.url,
        }
    )
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        user = User(email="dev@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        end = datetime(2026, 12, 28, 8, 0, tzinfo=UTC)
        db.session.add(
            UserSubscription(
                user_id=user.id,
                plan_id=2,
                billing_cycle="monthly",
                status="active",
                stripe_subscription_id="sub_dev",
                current_period_end=end,
            )
        )
        db.session.commit()
        db.session.expire_all()
        row = db.session.scalar(sa.select(UserSubscription))
        assert row.current_period_end == end and row.current_period_end.tzinfo is not None
        assert row.current_period_end < end + timedelta(seconds=1)  # comparable with Stripe's aware times
        with pytest.raises(sa.exc.StatementError):
            row.current_period_end = datetime(2026, 12, 28)  # a naive time is a bug, refused
            db.session.flush()
        db.session.rollback()
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) == {"alembic_version"}


def test_the_dashboards_daily_counts_follow_the_rows_on_sqlite(tmp_path, stripe_emulator):
    """Migration 0007's row-level triggers on SQLite keep the counts the dashboard adds up."""
    from decimal import Decimal

    from app.models import AuditLog, DailyCount
    from app.services.reporting import activity_history, conversions, mrr_history, revenue_summary

    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "STRIPE_API_BASE": stripe_emulator.url,
        }
    )
    now = datetime.now(UTC)
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        users = [User(email=f"dev{i}@example.com", password_hash="x") for i in range(3)]
        db.session.add_all(users)
        db.session.flush()
        row = UserSubscription(
            user_id=users[0].id,
            plan_id=2,
            billing_cycle="yearly",
            status="active",
            stripe_subscription_id="sub_dev",
            created_at=now - timedelta(days=3),
        )
        db.session.add_all(
            [
                row,
                AuditLog(
                    user_id=users[0].id,
                    action="subscription.activated",
                    details={"plan": "starter"},
                    created_at=now - timedelta(days=3),
                ),
            ]
        )
        db.session.commit()
        starter = {c.path: c for c in conversions(30)}["free_starter"]
        assert (starter.recent, starter.converted_users, starter.base_users) == (1, 1, 3)
        assert [d.signups for d in activity_history(3)] == [0, 0, 3]
        history = mrr_history(5)
        assert history[-1].value == revenue_summary().mrr == Decimal("199.99") / 12
        assert history[0].value == 0 and history[1].value == Decimal("199.99") / 12

        row.status, row.ended_at = "canceled", now
        db.session.delete(users[2])
        db.session.commit()
        assert mrr_history(5)[-1].value == 0 and mrr_history(5)[-2].value == Decimal("199.99") / 12
        assert {c.path: c for c in conversions(30)}["free_starter"].base_users == 2
        assert db.session.scalar(sa.select(sa.func.sum(DailyCount.value)).where(DailyCount.metric == "signups")) == 2
        downgrade(revision="base")


def test_the_success_page_and_the_webhook_do_not_both_insert_the_subscription_on_sqlite(tmp_path, stripe_emulator):
    """SQLite has no row locks: without app/sqlite_locking.py two concurrent syncs of one customer both see no
    row and both insert it (the second fails on the unique key, and the transition is audited twice)."""
    import threading

    from app.models import AuditLog
    from app.services.checkout import start_checkout
    from app.services.sync import sync_customer

    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "STRIPE_API_BASE": stripe_emulator.url,
        }
    )
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        db.session.add(User(email="racer@example.com", password_hash="x"))
        db.session.commit()
    with app.test_request_context():
        user_id = db.session.scalar(sa.select(User.id))
        checkout = start_checkout(
            user_id,
            "pro",
            "monthly",
            success_url="http://t/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://t/p",
        )
        customer = db.session.scalar(sa.select(User.stripe_customer_id))
    stripe_emulator.complete_checkout(checkout.session_id)

    start, errors = threading.Barrier(4), []

    def sync():  # what the success page and the webhook each end in
        with app.app_context():
            start.wait()
            try:
                sync_customer(customer)
            except Exception as error:  # noqa: BLE001 - collected, asserted below
                errors.append(error)

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        with app.app_context():
            assert errors == []
            assert db.session.scalar(sa.select(sa.func.count(UserSubscription.id))) == 1
            assert (
                db.session.scalar(
                    sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "subscription.activated")
                )
                == 1
            )
            downgrade(revision="base")
    finally:
        stripe_emulator.reset()  # the session's emulator: the next test's user 1 must not meet this one's customer


def test_recording_a_webhook_event_takes_turns_with_other_writers_on_sqlite(tmp_path, stripe_emulator):
    """A webhook records its event with a textual INSERT. On SQLite that write must take the process-wide write lock
    first, as every ORM write does: otherwise a request that took the lock waits on SQLite's own lock, held by the
    webhook, while the webhook waits on the process lock, until SQLite gives up ("database is locked": a 500 on the
    success page while its Checkout's webhooks arrive)."""
    import threading
    import time

    from app.models import AuditLog
    from app.services.webhooks import record

    app = create_app({"ENVIRONMENT": "development", "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    with app.app_context():
        upgrade()
    recorded, other_writing, errors = threading.Event(), threading.Event(), []
    event = {"id": "evt_turns", "type": "customer.updated", "created": 1_790_000_000, "data": {"object": {}}}

    def webhook():
        with app.app_context():
            try:
                record(event)
                recorded.set()
                other_writing.wait(10)
                time.sleep(0.5)  # the other request is now at its first write
                db.session.add(AuditLog(user_id=None, action="webhook.applied", details={}))
                db.session.commit()
            except Exception as error:  # noqa: BLE001 - collected, asserted below
                errors.append(error)
            finally:
                recorded.set()

    def other_request():
        with app.app_context():
            recorded.wait(10)
            other_writing.set()
            try:
                db.session.add(AuditLog(user_id=None, action="other.request", details={}))
                db.session.commit()
            except Exception as error:  # noqa: BLE001 - collected, asserted below
                errors.append(error)

    threads = [threading.Thread(target=webhook), threading.Thread(target=other_request)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with app.app_context():
        assert errors == []
        assert sorted(db.session.scalars(sa.select(AuditLog.action))) == ["other.request", "webhook.applied"]


def docs_customer_on_sqlite(tmp_path, webhook_secret: str):
    """The app on a fresh SQLite database (`make run`'s), migrated and seeded, with the user of Stripe's documented
    events (their customer, their Pro price): (app, the user's id)."""
    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_PRICE_PRO_MONTHLY": DOCS_PRICE,
        }
    )
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        user = User(email="jenny@example.com", password_hash="x", stripe_customer_id=CUSTOMER)
        db.session.add(user)
        db.session.commit()
        return app, user.id


def test_a_late_created_event_of_a_subscription_already_there_is_skipped_on_sqlite(tmp_path):
    """As on PostgreSQL, a `customer.subscription.created` arriving after the row was written (another event id,
    an older `created`) inserts nothing: answered 200, the row as the newer events left it (was a 500 on every
    retry: the insert hit the unique Stripe id)."""
    app, user_id = docs_customer_on_sqlite(tmp_path, "whsec_late")
    client = app.test_client()
    for name in ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"):
        assert post_event(client, load(name, user_id), "whsec_late").status_code == 200
    late = load("customer.subscription.created", user_id)
    late["id"], late["created"] = "evt_late_created", late["created"] - 10
    response = post_event(client, late, "whsec_late")
    assert response.status_code == 200, response.get_json()
    with app.app_context():
        assert db.session.execute(sa.select(UserSubscription.status)).scalars().all() == ["canceled"]
