"""The database pool pings a connection before use only when it sat idle (DATABASE_PING_AFTER_IDLE_SECONDS): a
request right after another makes no `SELECT 1` round trip of its own, and a connection cut by a PostgreSQL restart
while idle is still replaced before a request uses it."""

from __future__ import annotations

import contextlib
import time

from app import create_app
from app.extensions import db
from tests.conftest import make_config
from tests.perf.test_webhook_round_trips import round_trips

#: Short enough for a test to wait it out.
IDLE = 0.05


@contextlib.contextmanager
def pings(app):
    """The connections the pool pings while the block runs (SQLAlchemy's pre-ping and ours both call do_ping)."""
    with app.app_context():
        dialect = db.engine.dialect
    pinged: list = []
    ping = dialect.do_ping

    def counted(dbapi_connection) -> bool:
        pinged.append(dbapi_connection)
        return ping(dbapi_connection)

    dialect.do_ping = counted
    try:
        yield pinged
    finally:
        del dialect.do_ping


@contextlib.contextmanager
def app_pinging_after(migrated_database, redis_url, seconds: float):
    """An app of its own whose pool pings connections idle over `seconds`; its pool closed afterwards."""
    app = create_app(make_config(migrated_database, redis_url, DATABASE_PING_AFTER_IDLE_SECONDS=seconds))
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def test_back_to_back_requests_make_no_ping(app, client):
    assert client.get("/healthz").status_code == 200
    with pings(app) as pinged, round_trips(app) as statements:
        assert client.get("/healthz").status_code == 200
    assert statements == ["SELECT 1"]  # the health check's own query, on the pooled connection
    assert pinged == []


def test_a_connection_idle_in_the_pool_is_pinged_before_use(migrated_database, redis_url):
    with app_pinging_after(migrated_database, redis_url, IDLE) as app:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        time.sleep(IDLE * 3)
        with pings(app) as pinged:
            assert client.get("/healthz").status_code == 200
            assert client.get("/healthz").status_code == 200  # right after: not again
    assert len(pinged) == 1


def test_a_connection_cut_by_a_restart_while_idle_is_replaced_before_use(migrated_database, redis_url, services):
    with app_pinging_after(migrated_database, redis_url, IDLE) as app:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200  # a connection waits in the pool
        services.stop_postgres()
        services.start_postgres()
        time.sleep(IDLE * 3)
        with pings(app) as pinged:
            response = client.get("/healthz")
        assert response.status_code == 200, response.get_json()
        assert pinged  # the ping found the connection lost; a new one answered
