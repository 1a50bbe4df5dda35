"""The log-in check's statement on the engine's cursors (`extensions.DescribedOnReadCursor`): its description's
columns are made only when read, and a connection PostgreSQL ended under the app is replaced as before."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from app.extensions import DescribedOnReadCursor, ResultColumns, db
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401  (the fixture)


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_makes_no_column_description(pro_client, path):  # noqa: F811
    """SQLAlchemy only asks whether the log-in statement's cursor has a description (it compiled the columns
    before): psycopg's Column objects are not made. (Before: one per column of the statement, a score.)"""
    assert calls_of(psycopg.Column.__init__, lambda: pro_client.get(path)) == 0


def test_the_engines_cursors_describe_results_as_psycopg_does(app):
    """Rows, no rows and no result at all, through SQLAlchemy (a statement never compiled before reads the
    description in full) and on the driver's cursor."""
    with app.app_context():
        connection = db.session.connection()
        driver = connection.connection.driver_connection
        assert driver.cursor_factory is DescribedOnReadCursor
        fresh = f"SELECT 1 AS one, 'two'::text AS two, now() AS three -- {id(connection)}"
        assert connection.execute(sa.text(fresh)).mappings().one()["two"] == "two"
        assert connection.execute(sa.text("SELECT 1 AS one WHERE false")).all() == []
        cursor = driver.cursor()
        cursor.execute("SELECT 1 AS one, 'two'::text AS two")
        description = cursor.description
        assert isinstance(description, ResultColumns) and len(description) == 2
        plain = psycopg.Cursor.description.fget(cursor)
        assert [tuple(column) for column in description] == [tuple(column) for column in plain]
        assert [column.name for column in description] == ["one", "two"] and description[1].type_code == 25
        cursor.execute("SELECT")  # rows of no column: a description all the same, as psycopg gives it
        assert cursor.description is not None and len(cursor.description) == 0
        unread = cursor.description
        cursor.execute("SET LOCAL work_mem = '8MB'")  # no rows
        assert cursor.description is None
        with pytest.raises(psycopg.InterfaceError):  # read after the cursor moved on: refused, never another's
            unread[0]
        db.session.rollback()


def test_a_connection_postgresql_ended_is_replaced_and_the_next_view_is_served(app, pro_client):  # noqa: F811
    """A backend terminated under the app (a restart, a failover, an idle timeout on the way): the view that
    meets the dead connection fails as before (SQLAlchemy sees the disconnect, through the log-in check's
    statement, and drops the pool's connections); the next views connect afresh and are served."""
    used: list[int] = []

    def remember_backend(conn, cursor, statement, parameters, context, executemany):
        used.append(conn.connection.driver_connection.info.backend_pid)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", remember_backend)
    try:
        assert pro_client.get("/account").status_code == 200
        dead = used[-1]
        with psycopg.connect(engine.url.render_as_string(hide_password=False).replace("+psycopg", "")) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        statuses = [pro_client.get("/account").status_code for _ in range(3)]
    finally:
        sa.event.remove(engine, "before_cursor_execute", remember_backend)
    print("statuses after the kill:", statuses)
    assert statuses[-2:] == [200, 200] and set(statuses) <= {200, 500}
    assert used[-1] != dead
