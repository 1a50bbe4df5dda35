"""`flask doctor` in the guide's production shell prints its checklist and nothing of Alembic's: the migration check
reads the revision through Alembic, whose context announces its dialect at INFO ("Context impl PostgresqlImpl.",
"Will assume transactional DDL."), two log lines that landed between the checklist's first lines on a terminal
(and in production's JSON logs at every run) while telling the operator nothing.
"""

from __future__ import annotations


def test_doctor_prints_no_alembic_chatter(migrated_shell, stripe_emulator):
    shell = migrated_shell  # as `flask db upgrade` leaves it
    shell.env["STRIPE_API_BASE"] = stripe_emulator.url
    result = shell.run("flask doctor")
    printed = result.stdout + result.stderr
    assert "✓ Database migrations — at head" in result.stdout, printed
    assert "Context impl" not in printed
    assert "transactional DDL" not in printed
