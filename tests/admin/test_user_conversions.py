"""user_conversions follows the audit trail in the same transaction, and equals the distinct counts it replaces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, User, UserConversion
from app.services import audit
from tests.admin.conftest import add_audit, days_ago, demo_book
from tests.factories import UserFactory

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0006_user_conversions.py"


def conversion_of(user_id: int) -> UserConversion | None:
    db.session.expire_all()
    return db.session.get(UserConversion, user_id)


def test_each_path_keeps_the_first_time_and_other_entries_change_nothing(seeded):
    with seeded.app_context():
        user = UserFactory(email="mover@example.com")
        add_audit(user, "checkout.started", 40, plan="starter", billing_cycle="monthly")
        add_audit(None, "subscription.activated", 40, plan="pro")  # nobody's: no row
        assert conversion_of(user.id) is None
        add_audit(user, "subscription.activated", 30, plan="starter", billing_cycle="monthly")
        add_audit(user, "subscription.activated", 35, plan="starter", billing_cycle="monthly")  # earlier: kept
        add_audit(user, "subscription.activated", 20, plan="starter", billing_cycle="monthly")  # later: ignored
        add_audit(user, "subscription.plan_changed", 10, from_plan="starter", plan="pro", billing_cycle="monthly")
        add_audit(user, "subscription.plan_changed", 5, from_plan="pro", plan="starter", billing_cycle="monthly")
        row = conversion_of(user.id)
        assert row.free_starter_at == days_ago(35)
        assert row.free_pro_at is None
        assert row.starter_pro_at == days_ago(10)
        assert row.reached_starter_at == days_ago(35)


def test_the_row_is_written_in_the_audit_entrys_transaction(seeded):
    with seeded.app_context():
        user = UserFactory(email="undecided@example.com")
        audit.record("subscription.activated", user.id, subscription="sub_1", plan="pro", billing_cycle="monthly")
        db.session.flush()
        assert db.session.get(UserConversion, user.id) is not None
        db.session.rollback()  # the activation did not happen: neither did the conversion
        assert conversion_of(user.id) is None
        audit.record("subscription.activated", user.id, subscription="sub_1", plan="pro", billing_cycle="monthly")
        db.session.commit()
        assert conversion_of(user.id).free_pro_at is not None


def test_deleting_a_user_drops_them_from_both_counts(seeded):
    with seeded.app_context():
        user = UserFactory(email="leaver@example.com")
        add_audit(user, "subscription.activated", 3, plan="starter")
        db.session.execute(sa.delete(User).where(User.id == user.id))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserConversion)) == 0
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.user_id.is_not(None)))
            == 0
        )


def rows() -> list[tuple]:
    return [tuple(r) for r in db.session.execute(sa.select(UserConversion.__table__).order_by(UserConversion.user_id))]


def test_the_table_and_the_migrations_backfill_equal_the_audit_trails_distinct_counts(seeded):
    with seeded.app_context():
        UserFactory(email="first@example.com")  # demo_book borrows its password hash
    demo_book(seeded)
    with seeded.app_context():
        plan, from_plan = AuditLog.details["plan"].as_string(), AuditLog.details["from_plan"].as_string()
        activated, changed = AuditLog.action == "subscription.activated", AuditLog.action == "subscription.plan_changed"
        distinct = {
            "free_starter_at": sa.and_(activated, plan == "starter"),
            "free_pro_at": sa.and_(activated, plan == "pro"),
            "starter_pro_at": sa.and_(changed, from_plan == "starter", plan == "pro"),
            "reached_starter_at": sa.and_(sa.or_(activated, changed), plan == "starter"),
        }
        for column, where in distinct.items():
            expected = db.session.scalar(sa.select(sa.func.count(sa.distinct(AuditLog.user_id))).where(where))
            counted = db.session.scalar(sa.select(sa.func.count(UserConversion.__table__.c[column])))
            assert counted == expected, column
        assert (
            db.session.scalar(sa.select(sa.func.count(sa.distinct(AuditLog.user_id))).where(distinct["starter_pro_at"]))
            > 0
        )  # the book has Starter → Pro moves

        maintained = rows()
        spec = importlib.util.spec_from_file_location("migration_0006", MIGRATION)
        migration = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(migration)
        db.session.execute(sa.delete(UserConversion))
        db.session.execute(
            sa.text(migration.BACKFILL.format(plan="(details ->> 'plan')", from_plan="(details ->> 'from_plan')"))
        )
        assert rows() == maintained
        db.session.rollback()
