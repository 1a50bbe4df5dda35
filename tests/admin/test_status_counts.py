"""The `subscriptions.<status>` counts of daily_counts follow user_subscriptions through the triggers of migration
0012, and churn and failed payments read from them give exactly what a count of the rows gives — to the second,
whatever the time of day the window starts."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import DailyCount, User, UserSubscription
from app.services.reporting import REVENUE_STATUSES, churn, ended_at_expression, failed_payments
from tests.admin.conftest import NOW, add_subscription, days_ago, demo_book, plan_id
from tests.factories import UserFactory

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0012_subscription_status_counts.py"


def migration():
    spec = importlib.util.spec_from_file_location("migration_0012", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kept() -> set[tuple]:
    """The kept `subscriptions.*` rows, the zeros left by changes that cancelled out dropped."""
    return {
        tuple(r)
        for r in db.session.execute(
            sa.select(DailyCount.day, DailyCount.metric, DailyCount.value).where(
                DailyCount.metric.like("subscriptions.%"), DailyCount.value != 0
            )
        )
    }


def recounted() -> set[tuple]:
    """The same rows rebuilt by the migration's backfill over the whole table (then rolled back)."""
    db.session.execute(sa.delete(DailyCount).where(DailyCount.metric.like("subscriptions.%")))
    db.session.execute(sa.text(migration().backfill("postgresql")))
    rows = kept()
    db.session.rollback()
    return rows


def counted_churn(days: int, now) -> tuple[int, int]:
    """(churned, live at the start) counted from the rows themselves."""
    start, ended, row = now - timedelta(days=days), ended_at_expression(), UserSubscription
    canceled = row.status == "canceled"
    churned = db.session.scalar(sa.select(sa.func.count()).where(canceled, ended >= start, ended < now))
    live = db.session.scalar(
        sa.select(sa.func.count()).where(row.status.in_(REVENUE_STATUSES), row.created_at < start)
    ) + db.session.scalar(sa.select(sa.func.count()).where(canceled, row.created_at < start, ended >= start))
    return churned, live


def counted_failed() -> tuple[int, int]:
    status = UserSubscription.status
    return tuple(db.session.scalar(sa.select(sa.func.count()).where(status == s)) for s in ("past_due", "unpaid"))


def assert_figures_follow_the_rows() -> None:
    db.session.commit()
    assert kept() == recounted()
    failed = failed_payments()
    assert (failed.past_due, failed.unpaid) == counted_failed()
    # Windows starting at every time of day, and a `now` in the past (the partial days at both ends).
    for now in (NOW, NOW - timedelta(hours=7, minutes=13), NOW - timedelta(days=4, hours=17)):
        for days in (1, 7, 30, 45, 90):
            window = churn(days, now)
            assert (window.churned, window.active_at_start) == counted_churn(days, now), (now, days)


def test_churn_and_failed_payments_equal_a_count_of_the_rows_after_every_kind_of_write(seeded):
    with seeded.app_context():
        UserFactory(email="first@example.com")  # demo_book borrows its password hash
    demo_book(seeded)
    with seeded.app_context():
        assert_figures_follow_the_rows()
        users = [UserFactory(email=f"edge{i}@example.com") for i in range(6)]
        # Ends and starts a few hours from the window's edges, a subscription that ended before its row was
        # written (created now, ended 40 days ago), one canceled with no end time (it ends at updated_at).
        for i, hours in enumerate((1, 5, 23)):
            add_subscription(users[i], "starter", "monthly", "canceled", started=30 + hours / 24, ended=30 - hours / 24)
        add_subscription(users[3], "pro", "yearly", "canceled", started=0.01, ended=40)
        late = add_subscription(users[4], "pro", "monthly", "unpaid", started=29.9)
        assert_figures_follow_the_rows()

        # ORM updates: a status change, a cancellation, a canceled row's end moved.
        subscriptions = list(db.session.scalars(sa.select(UserSubscription).order_by(UserSubscription.id)))
        subscriptions[0].status = "past_due"
        subscriptions[1].status, subscriptions[1].ended_at = "canceled", days_ago(2)
        late.status, late.ended_at, late.canceled_at, late.updated_at = "canceled", None, None, days_ago(12.5)
        assert_figures_follow_the_rows()
        late.cancel_at_period_end = True  # moves updated_at to now, hence the day it counts as ended
        assert_figures_follow_the_rows()
        # Bulk SQL, as an operator's fix would.
        db.session.execute(
            sa.update(UserSubscription).where(UserSubscription.status == "active").values(status="unpaid")
        )
        db.session.execute(
            sa.update(UserSubscription)
            .where(UserSubscription.status == "unpaid", UserSubscription.billing_cycle == "monthly")
            .values(status="active")
        )
        db.session.execute(
            sa.update(UserSubscription)
            .where(UserSubscription.status == "canceled")
            .values(created_at=UserSubscription.created_at - sa.literal_column("interval '1 day'"))
        )
        assert_figures_follow_the_rows()
        # Deletes: one row by the ORM, a user with Core (their subscriptions go by ON DELETE CASCADE, if any).
        db.session.delete(subscriptions[2])
        db.session.execute(sa.delete(User).where(User.id == users[5].id))
        db.session.execute(sa.delete(UserSubscription).where(UserSubscription.user_id == users[0].id))
        assert_figures_follow_the_rows()


def test_an_update_that_changes_no_status_count_writes_nothing(seeded):
    with seeded.app_context():
        user = UserFactory(email="steady@example.com")
        row = add_subscription(user, "pro", "monthly", started=3)
        written = db.session.scalar(
            sa.text("SELECT xmin::text FROM daily_counts WHERE metric = 'subscriptions.active'")
        )
        row.last_event_at, row.cancel_at_period_end = 1_800_000_000, True  # what most webhooks change
        row.plan_id = plan_id("starter")  # counted per status, not per plan
        db.session.commit()
        assert (
            db.session.scalar(sa.text("SELECT xmin::text FROM daily_counts WHERE metric = 'subscriptions.active'"))
            == written
        )
