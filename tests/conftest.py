"""Fixtures: the app on the real PostgreSQL and Redis that `make test` starts, a client, a runner, users.

Isolation is by truncation after each test (works across threads and processes, which the browser and
emulator tests need), not by mocking anything of ours.
"""
from __future__ import annotations

import os
import re

import pytest
import redis
import sqlalchemy as sa
from flask_migrate import upgrade

from app import create_app
from app.extensions import db
from app.services.catalog import seed_plans_from_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the suite with `make test`, which starts PostgreSQL and Redis")
    return value


@pytest.fixture(scope="session")
def database_url() -> str:
    return _required_env("TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _required_env("TEST_REDIS_URL")


def make_config(database_url: str, redis_url: str, **overrides) -> dict:
    config = {
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATELIMIT_LOGIN": "5 per minute",
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def migrated_database(database_url, redis_url):
    """A clean schema built by the migrations themselves, once per session."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    app = create_app(make_config(database_url, redis_url))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return database_url


@pytest.fixture
def app(migrated_database, redis_url):
    app = create_app(make_config(migrated_database, redis_url))
    yield app
    with app.app_context():
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        db.session.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def seeded(app):
    """The three plans of the catalog."""
    with app.app_context():
        seed_plans_from_config()
    return app


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class Auth:
    """Signs up and logs in through the real forms, CSRF included."""

    def __init__(self, client):
        self.client = client

    def token(self, path: str = "/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def signup(self, email: str = "trader@example.com", password: str = "correct horse", confirm: str | None = None):
        return self.client.post(
            "/signup",
            data={"email": email, "password": password, "confirm": password if confirm is None else confirm,
                  "csrf_token": self.token("/signup")},
        )

    def login(self, email: str = "trader@example.com", password: str = "correct horse", **extra):
        return self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": self.token(), **extra}
        )

    def logout(self):
        token = csrf_token_from(self.client.get("/account").get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium; never a downloaded browser."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}
