"""Section 3.3 (the SQL that verifies the seeded plans) and section 9's `psql` debugging commands, run verbatim with
psql against the database the guide's DATABASE_URL names. (Its `redis-cli` lines reach 127.0.0.1:6379 only: they
run in test_redis_debugging.py against a Redis started there.)"""

import pytest
import sqlalchemy as sa

from tests.guide.guide_text import block_under, expected, find_guide
from tests.guide.test_rollback import ROWS

VERIFY_SQL = "verify_database_state.sql"
DEBUGGING = "debugging_commands.sh"


@pytest.mark.parametrize(
    ("heading", "copy"), [("### 3.3 Verify Database State", VERIFY_SQL), ("### Debugging Commands", DEBUGGING)]
)
def test_expected_copies_are_the_guides_blocks(heading, copy):
    guide = find_guide()
    if guide is None:
        pytest.skip("the deployment guide is not beside this checkout; the copies under expected/ stand in")
    assert block_under(guide.read_text(encoding="utf-8"), heading) == expected(copy)


def psql_commands() -> list[str]:
    """The `psql` lines of section 9, as written."""
    return [line for line in expected(DEBUGGING).splitlines() if line.startswith("psql ")]


def test_verify_database_state_after_the_seed(migrated_shell):
    shell = migrated_shell  # §3.1 done: `alembic upgrade head` (test_migrate.py)
    shell.ok("python scripts/seed_plans.py")
    result = shell.ok("psql $DATABASE_URL", stdin=expected(VERIFY_SQL))
    plans = [line.split("|") for line in result.stdout.splitlines() if line.count("|") == 4]
    assert [[cell.strip() for cell in row] for row in plans[1:]] == [
        ["free", "Free", "0.00", "", "t"],
        ["starter", "Starter", "19.99", "199.99", "t"],
        ["pro", "Pro", "49.99", "479.99", "t"],
    ]
    counts = {
        row.split("|")[0].strip(): int(row.split("|")[1])
        for row in result.stdout.splitlines()
        if row.count("|") == 1 and row.split("|")[1].strip().isdigit()
    }
    assert counts == {"free": 7, "starter": 7, "pro": 9}
    assert "(3 rows)" in result.stdout and result.stderr == ""


def test_the_debugging_psql_commands_show_the_users_rows(migrated_shell):
    shell = migrated_shell
    engine = shell.engine()
    with engine.begin() as conn:
        for row in ROWS:
            conn.execute(sa.text(row))
    engine.dispose()
    subscription, audit = psql_commands()
    shown = shell.ok(subscription.replace("<user-id>", "1001")).stdout
    assert "sub_Rollback" in shown and "(1 row)" in shown
    shown = shell.ok(audit).stdout
    assert "subscription.activated" in shown and "(1 row)" in shown
