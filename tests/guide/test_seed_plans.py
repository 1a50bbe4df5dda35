"""Section 3.1 then 3.2: `alembic upgrade head` (its database copied from `migrated_template`, which that command
built), then `python scripts/seed_plans.py` twice, then `flask seed-plans`.

The output must be the expected block character for character (the real price ids in place of `price_XXXXX`);
a second run says `✓ Updated` instead of `✓ Created` (and heads the price list "Plans:", having created none) and
writes nothing.
"""

import pytest
import sqlalchemy as sa

from tests.guide.guide_text import block_after, expected, find_guide, with_price_ids

SEED_OUTPUT = "seed_plans_output.txt"
WRITTEN_TABLES = ("subscription_plans", "plan_features")


def stored_rows(shell) -> dict:
    """Every plan and feature row with its row version (xmin: any UPDATE changes it), and the id sequences."""
    engine = shell.engine()
    with engine.connect() as conn:
        rows = {
            table: conn.execute(sa.text(f"SELECT xmin::text, * FROM {table} ORDER BY id")).all()
            for table in WRITTEN_TABLES
        }
        rows["sequences"] = [
            conn.execute(sa.text(f"SELECT last_value, is_called FROM {table}_id_seq")).one() for table in WRITTEN_TABLES
        ]
    engine.dispose()
    return rows


def test_expected_copy_is_the_guides_block():
    guide = find_guide()
    if guide is None:
        pytest.skip("the deployment guide is not beside this checkout; the copy under expected/ stands in")
    assert block_after(guide.read_text(encoding="utf-8"), "**Expected Output**:") == expected(SEED_OUTPUT)


def test_seed_script_prints_the_expected_block_then_updates_without_writing(migrated_shell):
    shell = migrated_shell  # §3.1 done: `alembic upgrade head` (test_migrate.py)
    created = with_price_ids(expected(SEED_OUTPUT))
    updated = created.replace("✓ Created", "✓ Updated").replace("\nPlans created:\n", "\nPlans:\n")
    assert updated.count("✓ Updated") == 3 and "\nPlans:\n" in updated

    first = shell.ok("python scripts/seed_plans.py")
    assert first.stdout == created
    after_first = stored_rows(shell)
    assert [len(after_first[t]) for t in WRITTEN_TABLES] == [3, 7 + 7 + 9]

    second = shell.ok("python scripts/seed_plans.py")
    assert second.stdout == updated
    assert stored_rows(shell) == after_first

    third = shell.ok("flask seed-plans")
    assert third.stdout == updated
    assert stored_rows(shell) == after_first


def test_flask_seed_plans_prints_the_same_block_as_the_script(migrated_shell):
    assert migrated_shell.ok("flask seed-plans").stdout == with_price_ids(expected(SEED_OUTPUT))
