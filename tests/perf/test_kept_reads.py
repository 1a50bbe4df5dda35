"""The connection a process keeps for the reads that open its requests (`extensions.KeptReads`): a logged-in view
takes no connection from the pool, a connection PostgreSQL ended under it is replaced within the same view, a
forked process makes its own, a second thread reads on the pool, and the engine's disposal closes it."""

from __future__ import annotations

import multiprocessing

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import Pool

from app.extensions import DriverRead, KeptReads, db
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401  (the fixture)
from tests.perf.test_login_check_driver import driver_connections


def admin_url(app) -> str:
    with app.app_context():
        return db.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_takes_no_connection_from_the_pool(app, pro_client, path):  # noqa: F811
    """The log-in check reads on the kept connection: no checkout and checkin of the pool's (its locks, events and
    reset), and the same connection view after view. (Before: one checkout per view.)"""
    assert calls_of(Pool.connect, lambda: pro_client.get(path)) == 0
    [first] = driver_connections(lambda: pro_client.get(path))
    [second] = driver_connections(lambda: pro_client.get(path))
    assert first is second and first.autocommit
    with app.app_context():
        assert db.engine.pool.checkedout() == 0


def test_a_backend_ended_under_the_kept_connection_costs_no_view(app, pro_client):  # noqa: F811
    """PostgreSQL ends the kept connection (a restart, a failover, an idle timeout on the way): the view that meets
    it reads again on a pooled connection and is served; the next view connects a kept one afresh. (Before, on a
    pooled connection: the view that met the dead connection answered 500.)"""
    [dead] = driver_connections(lambda: pro_client.get("/account"))
    with psycopg.connect(admin_url(app)) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (dead.info.backend_pid,))
    assert [pro_client.get("/account").status_code for _ in range(3)] == [200, 200, 200]
    [used] = driver_connections(lambda: pro_client.get("/account"))
    assert used is not dead and not used.closed and dead.closed


def test_a_statement_error_on_the_kept_connection_is_cores_and_leaves_it_open(app, pro_client):  # noqa: F811
    broken = DriverRead(sa.select(sa.literal_column("1") / sa.bindparam("zero", type_=sa.Integer)))
    [kept] = driver_connections(lambda: pro_client.get("/account"))
    with app.app_context():
        with pytest.raises(sa.exc.DataError) as raised:
            broken.rows_alone(db.engine, {"zero": 0})
        assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
        assert broken.rows_alone(db.engine, {"zero": 1}) == [(1,)]
    [again] = driver_connections(lambda: pro_client.get("/account"))
    assert again is kept and not kept.closed


def _child_backend(app, client, path, answer) -> None:
    """In a forked process: the backend its log-in check read on, and the view's status."""
    try:
        [driver] = driver_connections(lambda: client.get(path))
        answer.send((driver.info.backend_pid, client.get(path).status_code))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        answer.send(repr(error))


def test_a_forked_process_makes_its_own_kept_connection(app, pro_client):  # noqa: F811
    """gunicorn forks its workers from the master that loaded the app: a worker never reads on (nor closes) a
    connection made before the fork."""
    [parent] = driver_connections(lambda: pro_client.get("/account"))
    parent_backend = parent.info.backend_pid
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_child_backend, args=(app, pro_client, "/account", send))
    child.start()
    child.join(60)
    answer = receive.recv()
    assert isinstance(answer, tuple), answer
    child_backend, status = answer
    assert status == 200 and child_backend != parent_backend
    [still] = driver_connections(lambda: pro_client.get("/account"))
    assert still is parent and not parent.closed and pro_client.get("/account").status_code == 200


def test_a_read_while_the_kept_connection_is_in_use_takes_the_pool(app, pro_client):  # noqa: F811
    """One thread at a time on the kept connection (a threaded development server): another reads on the pool."""
    with app.app_context():
        engine = db.engine
    kept = KeptReads.of(engine)
    assert kept is not None
    kept.lock.acquire()
    try:
        assert calls_of(Pool.connect, lambda: pro_client.get("/account")) == 1
    finally:
        kept.lock.release()
    assert calls_of(Pool.connect, lambda: pro_client.get("/account")) == 0


def test_disposing_the_engine_closes_the_kept_connection(app, pro_client):  # noqa: F811
    [kept] = driver_connections(lambda: pro_client.get("/account"))
    with app.app_context():
        db.engine.dispose()
    assert kept.closed
    assert pro_client.get("/account").status_code == 200
