"""The log-in check on the driver's cursor (`extensions.DriverRead`): no execution context, result or cursor of
Core's per view, the same values as Core reads, Core's path whenever a listener watches the statements, and a
connection PostgreSQL ended under it replaced as Core replaces it. It runs on a pooled connection of its own, given
back at once: the session takes none for a page that reads nothing more."""

from __future__ import annotations

import sys

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import SessionTransaction

from app.extensions import DRIVER_READ_CURSOR, DriverRead, db, statements_listened_for
from app.services import accounts, sessions, viewer
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, logged_in_ids, pro_client  # noqa: F401


def driver_connections(action) -> list[psycopg.Connection]:
    """The psycopg connection of each statement a cursor sent while `action()` ran (a profile hook: no SQLAlchemy
    event listener, which would send the statement through Core instead)."""
    seen: list[psycopg.Connection] = []
    code = psycopg.Cursor.execute.__code__

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code:
            seen.append(frame.f_locals["self"].connection)

    sys.setprofile(hook)
    try:
        action()
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_runs_its_statement_without_cores_execution_context(pro_client, path):  # noqa: F811
    """One statement on the driver's cursor, and none of Core's execution contexts. (Before: one per view.)"""
    contexts = calls_of(DefaultExecutionContext._init_compiled, lambda: pro_client.get(path))
    sent = driver_connections(lambda: pro_client.get(path))
    assert (contexts, len(sent)) == (0, 1)


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_makes_no_cursor(pro_client, path):  # noqa: F811
    """The pooled connection keeps the cursor the log-in check runs on: a view makes none. (Before: one per view,
    its result loaders set up again.)"""
    assert calls_of(psycopg.Connection.cursor, lambda: pro_client.get(path)) == 0


def test_the_driver_reads_the_values_core_reads(app, pro_client):  # noqa: F811
    """Every column of the log-in check and of the account page's statement, times made aware in UTC, the bound
    time converted as Core converts it."""
    user_id, session_id = logged_in_ids(app)
    params = sessions.live_params(session_id, user_id, sessions.WEB)
    account = viewer._PAGES["account.show_account"][0]
    with app.test_request_context("/billing"):
        connection = db.session.connection()
        assert DriverRead.runs_on_driver(connection)
        for read, values in ((viewer._LOGGED_IN_READ, params), (account, {**accounts.account_fact_params(), **params})):
            core = [tuple(row) for row in connection.execute(read.statement, values).all()]
            driver = [tuple(row) for row in read.rows(connection, values)]
            assert driver == core and len(driver) == 1
            assert all(value.utcoffset().total_seconds() == 0 for value in driver[0] if hasattr(value, "utcoffset"))
        db.session.rollback()


def test_a_statement_listener_gets_cores_path_and_its_removal_the_drivers(app, pro_client):  # noqa: F811
    """A `before_cursor_execute` listener (a statement counter, Sentry's spans) is handed Core's execution context;
    once it is removed, views run on the driver's cursor again although SQLAlchemy still marks the engine."""
    contexts: list[object] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        contexts.append(context)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        assert pro_client.get("/account").status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    assert len(contexts) == 1 and isinstance(contexts[0], DefaultExecutionContext)
    assert engine._has_events
    assert calls_of(DefaultExecutionContext._init_compiled, lambda: pro_client.get("/account")) == 0
    with app.test_request_context("/account"):
        assert not statements_listened_for(db.session.connection())
        db.session.rollback()


@pytest.mark.parametrize("path", list(CEILINGS))
def test_the_driver_read_opens_no_transaction_on_the_server(app, pro_client, path):  # noqa: F811
    """As through Core: the log-in check reads in autocommit (no BEGIN, nothing to end), on the connection the
    process keeps for such reads (`KeptReads`: always in autocommit, outside the pool); the session's
    connections, from the pool, stay in transactions."""
    states: list[tuple[str, bool]] = []
    code = psycopg.Cursor.execute.__code__

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code:
            driver = frame.f_locals["self"].connection
            states.append((driver.info.transaction_status.name, driver.autocommit))

    sys.setprofile(hook)
    try:
        assert pro_client.get(path).status_code == 200
    finally:
        sys.setprofile(None)
    assert states == [("IDLE", True)]
    [driver] = driver_connections(lambda: pro_client.get(path))
    with app.app_context():
        assert db.engine.pool.checkedout() == 0
        with db.engine.connect() as pooled:
            assert pooled.connection.driver_connection is not driver
            assert pooled.connection.driver_connection.autocommit is False


def test_a_cursor_an_error_closed_is_replaced(app, pro_client):  # noqa: F811
    user_id, session_id = logged_in_ids(app)
    params = sessions.live_params(session_id, user_id, sessions.WEB)
    with app.test_request_context("/billing"):
        connection = db.session.connection()
        assert len(viewer._LOGGED_IN_READ.rows(connection, params)) == 1
        kept = connection.connection.info[DRIVER_READ_CURSOR]
        kept.close()
        assert len(viewer._LOGGED_IN_READ.rows(connection, params)) == 1
        assert connection.connection.info[DRIVER_READ_CURSOR] is not kept
        db.session.rollback()


def test_a_statement_error_on_the_driver_is_wrapped_as_core_wraps_it(app, pro_client):  # noqa: F811
    """A failing statement raises SQLAlchemy's exception (the driver's as its `orig`), the connection stays usable."""
    broken = DriverRead(sa.select(sa.literal_column("1") / sa.bindparam("zero", type_=sa.Integer)))
    with app.test_request_context("/billing"):
        connection = db.session.connection()
        with pytest.raises(sa.exc.DataError) as raised:
            broken.rows(connection, {"zero": 0})
        assert isinstance(raised.value.orig, psycopg.errors.DivisionByZero)
        db.session.rollback()
        assert broken.rows(db.session.connection(), {"zero": 1}) == [(1,)]
        db.session.rollback()


def test_a_backend_ended_under_the_driver_read_is_replaced_and_the_next_view_is_served(app, pro_client):  # noqa: F811
    """With no listener (the driver's path): the view that meets the connection PostgreSQL ended fails at most, as
    through Core (the connection is invalidated with the pool's others); the next views connect afresh."""
    [dead] = driver_connections(lambda: pro_client.get("/account"))
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (dead.info.backend_pid,))
    statuses = [pro_client.get("/account").status_code for _ in range(3)]
    print("statuses after the kill:", statuses)
    assert statuses[-2:] == [200, 200] and set(statuses) <= {200, 500}
    [used] = driver_connections(lambda: pro_client.get("/account"))
    assert used is not dead and not used.closed


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_gives_its_session_no_connection(app, pro_client, path):  # noqa: F811
    """The log-in check's connection is given back as soon as it has read; the session of a page that reads
    nothing more never takes one (nor ends a transaction on it). (Before: one per view.)"""
    assert calls_of(SessionTransaction._connection_for_bind, lambda: pro_client.get(path)) == 0
    with app.app_context():
        assert db.engine.pool.checkedout() == 0


def test_what_follows_the_log_in_check_runs_in_the_sessions_transaction(app, pro_client):  # noqa: F811
    """The session takes its own connection at its first statement after the check, in a transaction."""
    user_id, session_id = logged_in_ids(app)
    with app.test_request_context("/account"):
        user = viewer.logged_in_user(session_id, user_id)
        assert user is not None and not db.session().get_transaction()._connections  # nothing held yet
        user.billing_email = "changed@example.com"
        db.session.flush()
        driver = db.session.connection().connection.driver_connection
        assert (driver.info.transaction_status.name, driver.autocommit) == ("INTRANS", False)
        db.session.rollback()


def test_a_read_alone_that_fails_gives_its_connection_back_in_transactions(app, pro_client):  # noqa: F811
    broken = DriverRead(sa.select(sa.literal_column("1") / sa.bindparam("zero", type_=sa.Integer)))
    with app.app_context():
        engine = db.engine
        with pytest.raises(sa.exc.DataError):
            broken.rows_alone(engine, {"zero": 0})
        assert engine.pool.checkedout() == 0
        with engine.connect() as connection:
            assert connection.connection.driver_connection.autocommit is False
            assert broken.rows(connection, {"zero": 1}) == [(1,)]
