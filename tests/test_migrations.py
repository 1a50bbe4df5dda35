"""Migrations on PostgreSQL: upgrade → downgrade → upgrade, and no drift between models and schema; the
operator's `flask db upgrade` / `flask db downgrade` (one revision back, no argument needed)."""

import os
import subprocess
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from app import create_app
from app.extensions import db
from tests.conftest import fresh_database, make_config

ROOT = Path(__file__).resolve().parent.parent


def test_upgrade_downgrade_upgrade_without_drift(database_url, redis_url):
    url = fresh_database(database_url, "ssb_migrations")
    app = create_app(make_config(url, redis_url))
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {
            "users",
            "subscription_plans",
            "plan_features",
            "user_subscriptions",
            "audit_logs",
            "stripe_events",
        } <= tables

        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) == {"alembic_version"}

        upgrade()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, db.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        db.engine.dispose()


def test_flask_db_downgrade_steps_back_one_revision_and_upgrade_returns(database_url, redis_url):
    url = fresh_database(database_url, "ssb_migrations")
    env = dict(
        os.environ,
        ENVIRONMENT="testing",
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )

    def flask_db(*args: str) -> str:
        result = subprocess.run(["flask", "db", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def stored_revision() -> str:  # what `flask db current` reads, read directly (each `flask` run costs seconds)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            revision = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        engine.dispose()
        return revision

    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_revision("head")
    flask_db("upgrade")
    assert stored_revision() == head.revision
    flask_db("downgrade")
    assert stored_revision() == head.down_revision
    flask_db("upgrade")
    assert flask_db("current") == f"{head.revision} (head)"


def stripe_events_options() -> set[str]:
    return set(
        db.session.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'stripe_events'")).scalar() or []
    )


def test_stripe_events_are_vacuumed_after_a_few_thousand_changes(database_url, redis_url):
    """Queue mode updates every event once applied: the table is vacuumed after 1% of it and 1,000 rows have changed,
    not PostgreSQL's 20%, so the oldest-waiting-event look-up does not step over a fifth of the table's dead entries;
    the downgrade gives the defaults back."""
    url = fresh_database(database_url, "ssb_migrations")
    app = create_app(make_config(url, redis_url))
    with app.app_context():
        upgrade(revision="0012_subscription_status_counts")
        assert stripe_events_options() == set()
        db.session.rollback()
        upgrade(revision="0013_stripe_events_autovacuum")
        assert stripe_events_options() == {
            "autovacuum_vacuum_scale_factor=0.01",
            "autovacuum_vacuum_threshold=1000",
            "autovacuum_analyze_scale_factor=0.01",
            "autovacuum_analyze_threshold=1000",
        }
        db.session.rollback()
        downgrade(revision="0012_subscription_status_counts")
        assert stripe_events_options() == set()
        db.session.rollback()
        db.engine.dispose()
