"""Migrations on PostgreSQL: upgrade → downgrade → upgrade, and no drift between models and schema."""
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import make_config


def test_upgrade_downgrade_upgrade_without_drift(database_url, redis_url):
    admin = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS ssb_migrations WITH (FORCE)"))
        conn.execute(sa.text("CREATE DATABASE ssb_migrations"))
    admin.dispose()
    url = database_url.rsplit("/", 1)[0] + "/ssb_migrations"
    app = create_app(make_config(url, redis_url))
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"users", "subscription_plans", "plan_features", "user_subscriptions", "audit_logs",
                "stripe_events"} <= tables

        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) == {"alembic_version"}

        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        db.engine.dispose()
