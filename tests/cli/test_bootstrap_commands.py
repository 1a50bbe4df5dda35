"""The commands that print what production requires run in a production shell that lacks it.

.env.example says the price ids come from `flask stripe create-catalog` and the signing secret from `flask stripe
webhook-endpoint`; in production both refused to start ("STRIPE_PRICE_FREE_MONTHLY is not set", "STRIPE_WEBHOOK_SECRET
is still the placeholder …") until those very values were set. Every other command still refuses.
"""

from __future__ import annotations

import re

from app.config import runs_bootstrap_command
from tests.cli.conftest import OPERATOR_DATABASE
from tests.conftest import fresh_database
from tests.guide.conftest import PRICE_IDS

URL = "https://billing.example.com/api/v1/billing/webhooks/stripe"


def bootstrap_shell(operator_shell, stripe_emulator):
    """The guide's production shell before §1's values exist: no price ids, the signing secret still the guide's
    placeholder; Stripe is the suite's emulator (a test key)."""
    for name in PRICE_IDS:
        operator_shell.env.pop(name)
    operator_shell.env.update(
        STRIPE_WEBHOOK_SECRET="<your-webhook-signing-secret>",
        STRIPE_SECRET_KEY="sk_test_" + "b" * 24,
        STRIPE_PUBLISHABLE_KEY="pk_test_" + "b" * 24,
        STRIPE_API_BASE=stripe_emulator.url,
    )
    return operator_shell


def test_create_catalog_and_webhook_endpoint_run_without_what_they_print(
    operator_shell, stripe_emulator, database_url, migrated_template
):
    shell = bootstrap_shell(operator_shell, stripe_emulator)
    catalog = shell.ok("flask stripe create-catalog")
    printed = dict(re.findall(r"^(STRIPE_PRICE_\w+)=(price_\w+)$", catalog.stdout, re.M))
    assert sorted(printed) == sorted(PRICE_IDS), catalog.stdout

    endpoint = shell.ok(f"flask stripe webhook-endpoint --url {URL}")
    assert re.search(r"^STRIPE_WEBHOOK_SECRET=whsec_\w+$", endpoint.stdout, re.M), endpoint.stdout

    refused = shell.run("flask seed-plans")  # not a command that prints them: the refusal lists what is missing
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "STRIPE_PRICE_FREE_MONTHLY is not set" in refused.stderr
    assert "STRIPE_WEBHOOK_SECRET is still the placeholder <your-webhook-signing-secret>" in refused.stderr

    shell.env.update(printed)  # as the operator sets them: seeding then runs (the secret still to be set)
    shell.env["STRIPE_WEBHOOK_SECRET"] = re.search(r"^STRIPE_WEBHOOK_SECRET=(\S+)$", endpoint.stdout, re.M).group(1)
    # The database as `flask db upgrade` leaves it: a copy of `migrated_template` (built by `alembic upgrade head`);
    # `flask db upgrade` in this shell is test_database_errors.py's test_after_the_migrations_the_same_commands_succeed.
    assert fresh_database(database_url, OPERATOR_DATABASE, migrated_template) == shell.database_url
    shell.ok("flask seed-plans")


def test_other_production_problems_still_stop_a_bootstrap_command(operator_shell, stripe_emulator):
    """Only what the command prints is waived: a missing SECRET_KEY is still a refusal."""
    shell = bootstrap_shell(operator_shell, stripe_emulator)
    shell.env.pop("SECRET_KEY")
    refused = shell.run("flask stripe create-catalog")
    assert refused.returncode == 4
    assert "SECRET_KEY is not set" in refused.stderr
    assert "STRIPE_PRICE" not in refused.stderr and "STRIPE_WEBHOOK_SECRET" not in refused.stderr


def test_which_command_lines_are_bootstrap_commands():
    assert runs_bootstrap_command(["/venv/bin/flask", "stripe", "create-catalog"])
    assert runs_bootstrap_command(["/venv/bin/flask", "--app", "wsgi", "stripe", "webhook-endpoint", "--url", URL])
    assert runs_bootstrap_command(["/usr/lib/python3/flask/__main__.py", "stripe", "portal-config"])
    assert not runs_bootstrap_command(["/venv/bin/flask", "stripe", "sync", "--all"])
    assert not runs_bootstrap_command(["/venv/bin/flask", "seed-plans"])
    assert not runs_bootstrap_command(["/venv/bin/gunicorn", "stripe", "create-catalog"])
    assert not runs_bootstrap_command([])
