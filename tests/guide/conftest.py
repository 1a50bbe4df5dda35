"""The deployment guide's offline commands, run verbatim as an operator would: from the repository root, with the
project's virtualenv first on PATH and the guide's production variables set, against the PostgreSQL and Redis that
`make test` starts. Each test gets a fresh, empty database.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tests.conftest import fresh_database

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).resolve().parent / "expected"
GUIDE_DATABASE = "ssb_guide"

#: Price ids shaped like live ones, each distinct, so a report that swaps two of them shows it.
PRICE_IDS = {
    "STRIPE_PRICE_FREE_MONTHLY": "price_1QFreeMonthly000000000",
    "STRIPE_PRICE_STARTER_MONTHLY": "price_1QStarterMonthly00000",
    "STRIPE_PRICE_STARTER_YEARLY": "price_1QStarterYearly000000",
    "STRIPE_PRICE_PRO_MONTHLY": "price_1QProMonthly000000000",
    "STRIPE_PRICE_PRO_YEARLY": "price_1QProYearly0000000000",
}


def production_variables(database_url: str, redis_url: str) -> dict[str, str]:
    """Every variable of the guide's environment section, filled in, plus the app's own APP_BASE_URL."""
    return {
        "STRIPE_SECRET_KEY": "sk_live_" + "g" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_live_" + "g" * 24,
        "STRIPE_WEBHOOK_SECRET": "whsec_" + "g" * 32,
        **PRICE_IDS,
        "ENVIRONMENT": "production",
        "DEBUG": "false",
        "SECRET_KEY": "s" * 40,
        "API_PREFIX": "/api/v1",
        "ALLOWED_ORIGINS": '["https://smartstockbot.app"]',
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET_KEY": "j" * 40,
        "JWT_ALGORITHM": "HS256",
        "ACCESS_TOKEN_EXPIRE_MINUTES": "15",
        "REFRESH_TOKEN_EXPIRE_DAYS": "7",
        "ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "APP_BASE_URL": "https://billing.example.com",
    }


@dataclass
class Shell:
    """Runs a command line as typed at a shell prompt in the repository root; returns the finished process."""

    env: dict[str, str]
    database_url: str

    def run(self, command: str, timeout: int = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, shell=True, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, input=stdin
        )

    def ok(self, command: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """`run`, asserting exit status 0 (the output in the failure message); `stdin` as typed into the program."""
        result = self.run(command, stdin=stdin)
        assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://", 1))


def tables(conn) -> set[str]:
    """The application's tables in the database the connection reaches (not Alembic's bookkeeping)."""
    return set(sa.inspect(conn).get_table_names()) - {"alembic_version"}


@pytest.fixture
def shell(database_url, redis_url) -> Shell:
    """A fresh database and the environment of a production shell: the guide's variables, the venv on PATH."""
    return production_shell(database_url, redis_url, GUIDE_DATABASE)


@pytest.fixture
def migrated_shell(database_url, redis_url, migrated_template) -> Shell:
    """`shell`, its fresh database as `alembic upgrade head` leaves it (a copy of `migrated_template`)."""
    return production_shell(database_url, redis_url, GUIDE_DATABASE, template=migrated_template)


def production_shell(database_url: str, redis_url: str, name: str, template: str | None = None) -> Shell:
    """A fresh database named `name` (a copy of `template`'s when given) and a production shell's environment on it
    (the guide's variables, the venv on PATH, no inherited Stripe or Flask settings)."""
    url = fresh_database(database_url, name, template)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "FLASK_"))}
    env.update(production_variables(url, redis_url))
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return Shell(env=env, database_url=url)
