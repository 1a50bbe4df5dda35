"""Fast table tests of the pure rules: no PostgreSQL, Redis, emulator or browser (`make test-fast`).

The few rules that read the plan catalog get an app on a throw-away SQLite file, built once per session.
"""

from __future__ import annotations

import pytest

from app import create_app
from app.extensions import db
from app.services.catalog import seed_plans_from_config


@pytest.fixture(scope="session")
def catalog_app(tmp_path_factory):
    """An app whose catalog holds the three seeded plans with the development price ids."""
    path = tmp_path_factory.mktemp("unit") / "app.db"
    app = create_app({"ENVIRONMENT": "testing", "DATABASE_URL": f"sqlite:///{path}"})
    with app.app_context():
        db.create_all()
        seed_plans_from_config()
    return app


@pytest.fixture
def in_catalog(catalog_app):
    with catalog_app.app_context():
        yield catalog_app
