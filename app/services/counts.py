"""The dashboard's maintained counts rebuilt from their source tables: `flask admin recount`.

`daily_counts`, `daily_subscription_changes` and `stripe_event_counts` are kept by triggers in the transaction of
every write (migrations 0007, 0011, 0012); TRUNCATE fires no trigger, so a source table truncated by hand leaves them
counting rows that are gone. The recount empties them and runs the migrations' own backfill statements again, in one
transaction, with the source tables locked against writes (reads go on): the counts are exact when it commits. It
replaces stepping the migrations down and up, which also dropped the tables created after 0006 (sessions, verified
emails, alerts) with their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import current_app

from app.extensions import db

#: The migrations whose backfill statements count every row of their sources (each starts from empty tables).
DAILY_COUNTS = "0007_daily_counts"
EVENT_COUNTS = "0011_stripe_event_counts"
STATUS_COUNTS = "0012_subscription_status_counts"
COUNT_TABLES = ("daily_counts", "daily_subscription_changes", "stripe_event_counts")


@dataclass(frozen=True)
class Recount:
    """Rows per count table after the recount."""

    rows: dict[str, int]


def migration_module(revision: str) -> ModuleType:
    """A revision's module as Alembic loads it from the migrations directory Flask-Migrate is set to."""
    config = current_app.extensions["migrate"].migrate.get_config()
    module = ScriptDirectory.from_config(config).get_revision(revision).module
    return module


def recount() -> Recount:
    """Empty the count tables and count every source row again, in one transaction; rows per table after it."""
    dialect = db.engine.dialect.name
    daily = migration_module(DAILY_COUNTS)
    sources = list(daily.SOURCES)
    if dialect == "postgresql":
        # SHARE: writers (whose triggers would count into the tables being rebuilt) wait until the commit.
        db.session.execute(sa.text(f"LOCK TABLE {', '.join([*sources, 'stripe_events'])} IN SHARE MODE"))
    for table in COUNT_TABLES:
        db.session.execute(sa.text(f"DELETE FROM {table}"))
    for table in sources:
        db.session.execute(sa.text(daily.backfill(dialect, table)))
    db.session.execute(sa.text(migration_module(STATUS_COUNTS).backfill(dialect)))
    db.session.execute(sa.text(migration_module(EVENT_COUNTS).backfill(dialect)))
    rows = {table: db.session.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0 for table in COUNT_TABLES}
    db.session.commit()
    return Recount(rows)
