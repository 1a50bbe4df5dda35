"""daily_counts and daily_subscription_changes follow their source tables through the triggers of migration 0007,
whoever writes (ORM, bulk SQL, cascades), and always equal a recount of the tables from scratch."""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import DailyCount, DailySubscriptionChange, User, UserSubscription
from app.services.reporting import activity_history, conversions, mrr_history, revenue_summary
from tests.admin.conftest import add_audit, add_subscription, days_ago, demo_book, plan_id
from tests.factories import UserFactory

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"


def migration(name: str = "0007_daily_counts"):
    spec = importlib.util.spec_from_file_location(f"migration_{name}", VERSIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def maintained() -> dict[str, set[tuple]]:
    """Both tables' rows, the zeros left by changes that cancelled out dropped."""
    return {
        "daily_counts": {
            tuple(r)
            for r in db.session.execute(
                sa.select(DailyCount.day, DailyCount.metric, DailyCount.value).where(DailyCount.value != 0)
            )
        },
        "daily_subscription_changes": {
            tuple(r)
            for r in db.session.execute(
                sa.select(
                    DailySubscriptionChange.day,
                    DailySubscriptionChange.plan_id,
                    DailySubscriptionChange.billing_cycle,
                    DailySubscriptionChange.net,
                ).where(DailySubscriptionChange.net != 0)
            )
        },
    }


def recounted() -> dict[str, set[tuple]]:
    """The same tables rebuilt by the migrations' backfills over the whole source tables (then rolled back): 0007's,
    and 0012's `subscriptions.*` metrics of daily_counts."""
    module = migration()
    db.session.execute(sa.delete(DailyCount))
    db.session.execute(sa.delete(DailySubscriptionChange))
    for table in module.SOURCES:
        db.session.execute(sa.text(module.backfill("postgresql", table)))
    db.session.execute(sa.text(migration("0012_subscription_status_counts").backfill("postgresql")))
    rows = maintained()
    db.session.rollback()
    return rows


def test_every_kind_of_write_keeps_the_counts_equal_to_a_recount(seeded):
    with seeded.app_context():
        UserFactory(email="first@example.com")  # demo_book borrows its password hash
    demo_book(seeded)
    with seeded.app_context():
        before = maintained()
        assert before == recounted()
        assert any(metric == "converted.starter_pro" for _day, metric, _v in before["daily_counts"])

        # ORM updates: a plan change, a cancellation, a canceled row with no end time (its end is updated_at).
        subscriptions = list(db.session.scalars(sa.select(UserSubscription).order_by(UserSubscription.id)))
        subscriptions[0].plan_id = plan_id("pro") if subscriptions[0].plan.name == "starter" else plan_id("starter")
        subscriptions[1].status, subscriptions[1].ended_at = "canceled", days_ago(2)
        subscriptions[2].status, subscriptions[2].ended_at, subscriptions[2].canceled_at = "canceled", None, None
        subscriptions[2].updated_at = days_ago(3)
        db.session.commit()
        counted = maintained()
        assert counted == recounted()
        subscriptions[2].cancel_at_period_end = True  # moves updated_at to now, hence the day it counts as ended
        db.session.commit()
        assert maintained() != counted
        # Bulk SQL, as an operator's fix would: every trialing/active row of one cycle to past_due and back.
        db.session.execute(
            sa.update(UserSubscription).where(UserSubscription.status == "active").values(status="unpaid")
        )
        db.session.execute(
            sa.update(UserSubscription)
            .where(UserSubscription.status == "unpaid", UserSubscription.billing_cycle == "monthly")
            .values(status="active")
        )
        # A deleted subscription row, and a user deleted with Core (their conversion row goes by ON DELETE CASCADE).
        db.session.delete(subscriptions[3])
        converted = db.session.scalar(sa.text("SELECT user_id FROM user_conversions ORDER BY user_id LIMIT 1"))
        db.session.execute(sa.delete(User).where(User.id == converted))
        db.session.commit()
        after = maintained()
        assert after != before
        assert after == recounted()


def test_an_update_that_changes_no_count_writes_nothing(seeded):
    with seeded.app_context():
        user = UserFactory(email="steady@example.com")
        row = add_subscription(user, "pro", "monthly", started=3)
        written = db.session.scalar(sa.text("SELECT xmin::text FROM daily_subscription_changes"))
        row.last_event_at, row.cancel_at_period_end = 1_800_000_000, True  # what most webhooks change
        db.session.commit()
        assert db.session.scalar(sa.text("SELECT xmin::text FROM daily_subscription_changes")) == written


def test_the_figures_follow_a_subscription_through_its_life(seeded):
    """Started, upgraded, canceled: today's MRR point, the history and the conversions move with the rows."""
    with seeded.app_context():
        user = UserFactory(email="lifecycle@example.com")
        row = add_subscription(user, "starter", "monthly", started=5)
        add_audit(user, "subscription.activated", 5, plan="starter", billing_cycle="monthly")
        history = mrr_history(10)
        assert history[-1].value == revenue_summary().mrr == Decimal("19.99")
        assert [p.value for p in history[:4]] == [0] * 4 and history[5].value == Decimal("19.99")

        row.plan_id = plan_id("pro")
        add_audit(user, "subscription.plan_changed", 0, from_plan="starter", plan="pro", billing_cycle="monthly")
        paths = {c.path: c for c in conversions(30)}
        assert (paths["starter_pro"].recent, paths["starter_pro"].converted_users) == (1, 1)
        assert paths["free_starter"].base_users == 1 and paths["starter_pro"].base_users == 1
        assert mrr_history(10)[-1].value == Decimal("49.99")  # earlier points price it at its current plan

        row.status, row.ended_at, row.canceled_at = "canceled", days_ago(0), days_ago(0)
        db.session.commit()
        history = mrr_history(10)
        assert history[-1].value == revenue_summary().mrr == 0
        assert history[-2].value == Decimal("49.99")  # it was live at the end of yesterday
        activity = activity_history(7)
        assert activity[-1].day == days_ago(0).date() and activity[-1].signups == 1
        assert sum(d.conversions for d in activity) == 2
        assert activity[-6].day == (days_ago(0) - timedelta(days=5)).date()
