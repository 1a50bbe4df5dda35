"""A request that meets the database down logs one short `database_unavailable` line, not a traceback.

The operator review: a 20-second PostgreSQL outage wrote 174 `unhandled_exception` lines of ~4.3 KB each (the same
traceback every time) and no line saying plainly that the database was unavailable. Other errors keep their traceback.
"""

from __future__ import annotations

import socket

from app import create_app
from app.extensions import db
from app.models import User
from tests.conftest import make_config

PASSWORD = "Sup3rS3cretDbPassw0rd"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_down_logs_one_short_line_and_no_traceback(redis_url, capfd):
    url = f"postgresql://ssb:{PASSWORD}@127.0.0.1:{closed_port()}/ssb_test"
    app = create_app(make_config(url, redis_url))
    capfd.readouterr()
    for _ in range(2):
        assert app.test_client().get("/pricing").status_code == 500
    output = "".join(capfd.readouterr())
    lines = [line for line in output.splitlines() if "database_unavailable" in line]
    assert len(lines) == 2, output
    for line in lines:
        assert len(line) < 700, line
        assert "OperationalError" in line and "Connection refused" in line, line
        assert PASSWORD not in line
    assert "Traceback" not in output and "unhandled_exception" not in output, output
    assert PASSWORD not in output


def test_other_errors_keep_their_traceback(migrated_database, redis_url, capfd):
    app = create_app(make_config(migrated_database, redis_url))

    @app.get("/api/v1/_boom_traceback")
    def boom():
        db.session.add(User(email="twice@example.com", password_hash="x"))
        db.session.add(User(email="twice@example.com", password_hash="x"))
        db.session.flush()  # IntegrityError: a bug of ours, not the database being away

    capfd.readouterr()
    assert app.test_client().get("/api/v1/_boom_traceback").status_code == 500
    output = "".join(capfd.readouterr())
    assert "unhandled_exception" in output and "Traceback" in output and "IntegrityError" in output
    assert " database_unavailable " not in output and '"database_unavailable"' not in output
    with app.app_context():
        db.engine.dispose()
