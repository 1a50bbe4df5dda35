"""The fresh-clone default: the migrations build the schema on SQLite, and times come back timezone-aware."""
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from app.models import User, UserSubscription
from app.services.catalog import seed_plans_from_config


def test_migrations_and_aware_times_on_sqlite(tmp_path, stripe_emulator):
    app = create_app({"ENVIRONMENT": "development", "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
                      "STRIPE_API_BASE": stripe_emulator.url})
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        user = User(email="dev@example.com", password_hash="x")
        db.session.add(user)
        db.session.flush()
        end = datetime(2026, 12, 28, 8, 0, tzinfo=timezone.utc)
        db.session.add(UserSubscription(user_id=user.id, plan_id=2, billing_cycle="monthly", status="active",
                                        stripe_subscription_id="sub_dev", current_period_end=end))
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
