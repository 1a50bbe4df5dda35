"""The deploy commands, typed as the README's operator's guide has them, on a database that is out of reach or not
migrated yet: one line naming the cause (and never the URL's password), exit status 1, no traceback.

They used to print 130–160 lines of traceback ending in psycopg's message.
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import closed_port

PASSWORD = "Sup3rS3cretDbPassw0rd"

#: The README's deploy step 2 in both spellings (the guide's §3.1 is `alembic upgrade head`) and its rollback.
MIGRATE_COMMANDS = ["flask db upgrade", "alembic upgrade head", "alembic downgrade -1"]
#: The README's deploy steps 2, 3 (both spellings) and 5.
DEPLOY_COMMANDS = [
    *MIGRATE_COMMANDS,
    "flask seed-plans",
    "python scripts/seed_plans.py",
    "flask users create ops@example.com --admin --password 'correct horse battery'",
]


def one_error_line(result) -> str:
    """The `Error: …` line of a failed command, after checking there is nothing else wrong with the output."""
    both = result.stdout + result.stderr
    assert result.returncode == 1, both
    assert "Traceback" not in both
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr  # stdout may hold the seed script's banner, printed before it failed
    assert errors[0].startswith("Error: ")
    return errors[0]


@pytest.mark.parametrize("command", DEPLOY_COMMANDS)
def test_an_unreachable_database_is_one_line_naming_host_and_port(operator_shell, command):
    port = closed_port()
    operator_shell.env["DATABASE_URL"] = f"postgresql+psycopg://billing:{PASSWORD}@127.0.0.1:{port}/billing"
    result = operator_shell.run(command)
    assert one_error_line(result) == (
        f"Error: Could not connect to the database at 127.0.0.1:{port}/billing (Connection refused): check "
        "DATABASE_URL and that the database server is running and reachable from this host"
    )
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("command", DEPLOY_COMMANDS[len(MIGRATE_COMMANDS) :])
def test_an_unmigrated_database_says_to_run_the_migrations(operator_shell, command):
    result = operator_shell.run(command)
    line = one_error_line(result)
    address = operator_shell.database_url.split("@", 1)[1]
    assert line.startswith(f"Error: The database at {address} is not migrated (relation ")
    assert line.endswith(" does not exist): run `flask db upgrade`")


def test_after_the_migrations_the_same_commands_succeed(operator_shell):
    """The fix the line names is the fix."""
    assert "not migrated" in operator_shell.run("flask seed-plans").stderr
    operator_shell.ok("flask db upgrade")
    assert "Seed completed successfully!" in operator_shell.ok("flask seed-plans").stdout


def test_an_unreachable_task_queue_is_one_line_for_the_worker(migrated_operator_shell):
    """`flask queue worker` on a TASK_QUEUE_URL nothing answers: one line, not rq's traceback."""
    port = closed_port()
    migrated_operator_shell.env["TASK_QUEUE_URL"] = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    result = migrated_operator_shell.run("flask queue worker --burst")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"Error: Could not reach Redis (Error 111 connecting to 127.0.0.1:{port}. Connection refused): check "
        "REDIS_URL and TASK_QUEUE_URL, and that Redis is running"
    )
    assert PASSWORD not in result.stdout + result.stderr


#: The README's step 5 as typed: the password is asked for.
CREATE_ADMIN = "flask users create ops@example.com --admin"


def test_the_database_is_asked_before_the_password(operator_shell):
    """Out of reach: the one line at once, instead of a password typed twice for nothing (the prompt is not shown)."""
    port = closed_port()
    operator_shell.env["DATABASE_URL"] = f"postgresql+psycopg://billing:{PASSWORD}@127.0.0.1:{port}/billing"
    result = operator_shell.run(CREATE_ADMIN, stdin="")
    assert one_error_line(result).startswith(f"Error: Could not connect to the database at 127.0.0.1:{port}/billing")
    assert "Password" not in result.stdout + result.stderr


def test_a_taken_email_is_refused_before_the_password(migrated_operator_shell):
    operator_shell = migrated_operator_shell
    typed = "correct horse battery\ncorrect horse battery\n"
    assert "✓ Created admin user ops@example.com" in operator_shell.ok(CREATE_ADMIN, stdin=typed).stdout
    result = operator_shell.run(CREATE_ADMIN.replace("ops@", "Ops@"), stdin="")
    assert one_error_line(result) == "Error: An account with this email already exists."
    assert "Password" not in result.stdout + result.stderr
