"""Section 3.1: `alembic upgrade head` from the repository root builds the whole schema, and again is a no-op."""

from app import models  # noqa: F401  (every table on db.metadata)
from app.extensions import db
from tests.guide.conftest import tables


def test_upgrade_head_builds_every_table_of_the_models(shell):
    shell.ok("alembic upgrade head")
    shell.ok("alembic upgrade head")
    assert shell.ok("alembic current").stdout.strip().endswith("(head)")
    engine = shell.engine()
    with engine.connect() as conn:
        assert tables(conn) == set(db.metadata.tables)
    engine.dispose()
