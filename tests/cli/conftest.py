"""Fixtures of the operator CLI tests: apps configured as an operator's shell would be, and that shell itself."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from app import create_app
from app.extensions import db
from tests.conftest import make_config
from tests.guide.conftest import Shell, production_shell


def closed_port() -> int:
    """A loopback port nothing listens on (the probe that held it is closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def app_with(migrated_database, redis_url) -> Iterator[Callable[..., Flask]]:
    """`app_with(**config)`: an app of its own on the suite's database and Redis with `config` on top (a Stripe key,
    an API base); its pool is closed after the test."""
    made: list[Flask] = []

    def make(**overrides) -> Flask:
        app = create_app(make_config(migrated_database, redis_url, **overrides))
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


OPERATOR_DATABASE = "ssb_cli"


@pytest.fixture
def operator_shell(database_url, redis_url) -> Shell:
    """A production shell (the guide's variables, the venv on PATH) on a fresh, empty, unmigrated database."""
    return production_shell(database_url, redis_url, OPERATOR_DATABASE)


@pytest.fixture
def migrated_operator_shell(database_url, redis_url, migrated_template) -> Shell:
    """`operator_shell` as `flask db upgrade` leaves it: its fresh database a copy of `migrated_template`
    (tests/conftest.py), for the tests whose subject is a later command."""
    return production_shell(database_url, redis_url, OPERATOR_DATABASE, template=migrated_template)
