"""The README's Deploy steps, every command as written and in the README's order, in a production shell on a fresh,
empty database (the suite's PostgreSQL and Redis) with Stripe the suite's emulator: each must succeed where it stands.

An outside review: step 1 ran `flask stripe portal-config` before `flask db upgrade` (step 2) and the seed (step 3);
it exits 1 ("… is not migrated … run `flask db upgrade`"), then again ("No paid plan … run `flask seed-plans`
first"). The guide's order (§1 Stripe, §2 the environment, §3.1 the migrations, §3.2 the seed) is kept; the portal
command, which needs the seeded plans' prices, comes after the seed.

The commands are the README's inline code spans in the Deploy section that start a command (`flask`, `alembic`,
`python`, `gunicorn`), outside parentheses (which hold an alternative spelling, `alembic upgrade head` or `python
scripts/seed_plans.py`, or the rollback, not a step), each where it is first named. What a command prints as `NAME=value` is set in the
environment before the next one, as step 1 says to.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
import sqlalchemy as sa

from tests.cli.test_bootstrap_commands import bootstrap_shell
from tests.guide.conftest import ROOT
from tests.guide.guide_text import find_guide
from tests.ops.test_gunicorn import free_port, get, wait_until_up

COMMAND_STARTS = ("flask ", "alembic ", "python ", "gunicorn ")
#: Every step's command, whatever the order the README gives them (so that a step dropped from it is noticed).
DEPLOY_COMMANDS = {
    "flask stripe create-catalog",
    "flask stripe webhook-endpoint --url https://your.app/api/v1/billing/webhooks/stripe",
    "flask db upgrade",
    "flask seed-plans",
    "flask stripe portal-config",
    "gunicorn wsgi:app",
    "flask users create ops@example.com --admin",
}
PASSWORD = "correct horse battery"


def deploy_section(readme: str) -> str:
    start = readme.index("\n### Deploy\n")
    return readme[start : readme.index("\n### ", start + 1)]


def outside_parentheses(markdown: str) -> list[str]:
    """The inline code spans not inside parentheses, in order, their whitespace (a line break) made one space."""
    spans, depth = [], 0
    for i, part in enumerate(markdown.split("`")):
        if i % 2:  # a code span
            if depth == 0:
                spans.append(" ".join(part.split()))
        else:
            for char in part:
                depth += {"(": 1, ")": -1}.get(char, 0)
    return spans


def readme_deploy_commands() -> list[str]:
    section = deploy_section((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = [span for span in outside_parentheses(section) if span.startswith(COMMAND_STARTS)]
    return list(dict.fromkeys(commands))  # a command named again (step 2's "run `flask db upgrade`") runs once


def test_the_readme_names_every_deploy_command_once():
    commands = readme_deploy_commands()
    assert sorted(commands) == sorted(DEPLOY_COMMANDS), commands


def test_the_readme_keeps_the_guides_order():
    """Migrations (§3.1) before the seed (§3.2), the catalog and the endpoint (§1.1, §1.2) before both, as in the
    guide; the portal (§1.3, a Dashboard setting there) once the seed has given it its prices."""
    guide = find_guide()
    if guide is not None:
        text = guide.read_text(encoding="utf-8")
        assert text.index("### 1.1 ") < text.index("### 1.2 ") < text.index("### 3.1 ") < text.index("### 3.2 ")
    order = {command.split(" --")[0]: i for i, command in enumerate(readme_deploy_commands())}
    assert (
        order["flask stripe create-catalog"]
        < order["flask stripe webhook-endpoint"]
        < order["flask db upgrade"]
        < order["flask seed-plans"]
        < order["flask stripe portal-config"]
    ), order


def start_gunicorn(shell, command: str, tmp_path):
    """`command` (the README's gunicorn line) typed as is, on a free port ($PORT, which the root gunicorn.conf.py
    reads), one worker; returns the process once /healthz answers."""
    port = free_port()
    env = {**shell.env, "PORT": str(port), "WEB_CONCURRENCY": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, shell=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_up(process, port, log_path)
        status, body, _ = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, body
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def bootstrap(shell, stripe_emulator):
    """The production shell before §1's values exist (no price ids, the signing secret the guide's placeholder) on a
    fresh, empty, unmigrated database; Stripe is the suite's emulator."""
    return bootstrap_shell(shell, stripe_emulator)


def test_the_readme_deploy_commands_run_in_the_readme_order(bootstrap, stripe_emulator, tmp_path):
    shell = bootstrap
    printed: dict[str, str] = {}
    for command in readme_deploy_commands():
        if command.startswith("gunicorn "):
            start_gunicorn(shell, command, tmp_path)
            continue
        typed = f"{PASSWORD}\n{PASSWORD}\n" if command.startswith("flask users create") else None
        result = shell.run(command, stdin=typed)
        assert result.returncode == 0, (
            f"README deploy order: `{command}` exited {result.returncode} after "
            f"{readme_deploy_commands()[: readme_deploy_commands().index(command)]}:\n{result.stdout}\n{result.stderr}"
        )
        # What the operator is told to set: the five price ids, the signing secret.
        found = dict(re.findall(r"^(STRIPE_[A-Z_]+)=(\S+)$", result.stdout, re.M))
        printed.update(found)
        shell.env.update(found)

    assert sorted(printed) == sorted(
        [
            "STRIPE_PRICE_FREE_MONTHLY",
            "STRIPE_PRICE_STARTER_MONTHLY",
            "STRIPE_PRICE_STARTER_YEARLY",
            "STRIPE_PRICE_PRO_MONTHLY",
            "STRIPE_PRICE_PRO_YEARLY",
            "STRIPE_WEBHOOK_SECRET",
        ]
    )
    engine = shell.engine()
    with engine.connect() as conn:
        seeded = set(conn.execute(sa.text("SELECT stripe_price_id_monthly FROM subscription_plans")).scalars()) | set(
            conn.execute(sa.text("SELECT stripe_price_id_yearly FROM subscription_plans")).scalars()
        )
        admins = conn.execute(sa.text("SELECT email FROM users WHERE is_admin")).scalars().all()
    engine.dispose()
    assert {v for k, v in printed.items() if k.startswith("STRIPE_PRICE_")} <= seeded
    assert admins == ["ops@example.com"]
    # The portal set by the README's command switches between the seeded paid prices.
    [configuration] = stripe_emulator.client().v1.billing_portal.configurations.list().data
    switching = configuration.features.subscription_update
    assert switching.enabled
    offered = {price for product in switching.products for price in product.prices}
    assert offered == {v for k, v in printed.items() if k.startswith("STRIPE_PRICE_") and "FREE" not in k}
