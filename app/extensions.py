"""Extensions, created unbound: `create_app` binds them with `init_app`, models import `db` from here."""

import copy
import os
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

import psycopg
from flask import Flask, current_app, request, session
from flask.globals import _cv_app, _cv_request, request_ctx
from flask_caching import Cache
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_qualified_name, get_remote_address
from flask_login import LoginManager
from flask_login.utils import _create_identifier as create_session_identifier
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from limits.util import WindowStats
from psycopg.pq import ExecStatus, TransactionStatus
from redis import Redis
from rq import Queue
from sqlalchemy import Connection, Dialect, Engine, MetaData, Select, event
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import DeclarativeBase, scoped_session
from sqlalchemy.sql.compiler import SQLCompiler

# Named constraints, so that migrations can drop them by name on every database (SQLite batch mode included).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: Where an app context keeps the instances made persistent once its session is made (`persistent_when_used`).
_WAITING_FOR_SESSION = "_ssb_waiting_for_session"


class SiteSQLAlchemy(SQLAlchemy):
    """Flask-SQLAlchemy, whose end-of-context step skips a context that never used the session (a visitor's page
    served from cache, a probe, a logged-in page served from the log-in check and caches): `scoped_session.remove()`
    would look the context's session up and then clear it by raising and catching a KeyError. A session that was
    used is closed and cleared as before.

    An instance read without the ORM (the logged-in user, from the log-in check's columns) joins the session only
    when the context makes one (`persistent_when_used`): a page that reads nothing more makes no session at all.
    Making a Session, adding the user to it and closing it again costs about 250k CPU instructions, 14% of a
    logged-in page served from its kept copy."""

    def _teardown_session(self, exc: BaseException | None) -> None:
        if self.session.registry.has():
            self.session.remove()

    def _make_scoped_session(self, options: dict[str, Any]) -> scoped_session:
        scoped = super()._make_scoped_session(options)
        make = scoped.registry.createfunc

        def make_with_waiting() -> Any:
            """The context's session, with the instances waiting for it made persistent in it (as `add` does)."""
            session = make()
            context = _cv_app.get(None)
            waiting = context.g.__dict__.pop(_WAITING_FOR_SESSION, None) if context is not None else None
            for instance in (waiting or {}).values():
                session.add(instance)
            return session

        scoped.registry.createfunc = make_with_waiting
        return scoped

    def persistent_when_used(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The instance of identity `key` (`Mapper.identity_key_from_primary_key`) as the request's session has it,
        or `make()`'s (a detached instance with its identity key, its columns loaded): persistent in the
        session now when the context has one, else as soon as the context makes it — before any statement, flush,
        or `get` of it runs — so that a change made to it meanwhile is flushed, and a query gives this instance
        back. Until then it is detached: a relationship of it not loaded yet cannot load (none of the logged-in
        user's is read before the session is), its loaded columns read as usual. Outside an app context, added now."""
        registry = self.session.registry
        context = _cv_app.get(None)
        if context is None or registry.has():
            session = self.session()
            known = session.identity_map.get(key)
            if known is not None:
                return known
            instance = make()
            session.add(instance)
            return instance
        waiting = context.g.__dict__.setdefault(_WAITING_FOR_SESSION, {})
        instance = waiting.get(key)
        if instance is None:
            instance = waiting[key] = make()
        return instance


db = SiteSQLAlchemy(model_class=Base)


@contextmanager
def autocommit_when_idle() -> Iterator[Connection]:
    """Run the block's statements in autocommit on PostgreSQL (psycopg) when the session's transaction has not begun
    on the server: each commits alone, in its own round trip, with no BEGIN before nor COMMIT after (psycopg sends
    each as a round trip of its own); the driver is back in transactions afterwards, so whatever follows begins a
    transaction at its first statement. Elsewhere (SQLite, a transaction already open, changes not yet flushed —
    their autoflush must not write outside a transaction — or a connection its caller put in autocommit, left as it
    is) the block runs in the session's transaction as usual. Used for the log-in check (web and API token) when the
    session has begun already (before that it reads on a connection of its own: `DriverRead.rows_alone`), the
    webhook endpoint's one INSERT in queue mode, and the API's one-read answers (the strategies list, the
    subscription).
    The block is given the session's connection (`with autocommit_when_idle() as connection:`)."""
    session = db.session()  # the request's Session itself: each attribute of the scoped proxy looks it up again
    connection = session.connection()
    driver: Any = connection.connection.driver_connection  # psycopg.Connection, on PostgreSQL
    if (
        connection.dialect.driver != "psycopg"
        or driver.autocommit  # a connection the caller put in autocommit stays as it is
        or driver.pgconn.transaction_status != TransactionStatus.IDLE  # libpq's answer, without `info`'s wrapper
        or session.new
        or session.dirty
        or session.deleted
    ):
        yield connection
        return
    driver.autocommit = True
    try:
        yield connection
    finally:
        if driver.pgconn.transaction_status == TransactionStatus.IDLE:  # not a connection the error left broken
            driver.autocommit = False


#: Where a pooled connection's entry remembers when it was last returned to the pool (time.monotonic()).
CHECKED_IN_AT = "ssb_checked_in_at"


def ping_after_idle(engine: Engine, seconds: float) -> None:
    """Check a pooled connection with a round trip (`SELECT 1`) only when it sat idle in the pool over `seconds`.

    SQLAlchemy's `pool_pre_ping` pings every connection taken from the pool: one more round trip on every request
    that touches the database. A connection returned moments ago is as good as the request that returned it found
    it; one that sat idle may have been cut meanwhile (a PostgreSQL restart, a failover, an idle timeout on the
    way). So an idle one is pinged, and a dead one is replaced before anything uses it (a DisconnectionError
    raised in the pool's `checkout` event has the pool connect afresh); a recent one is not. As with pre-ping, a
    ping that finds the connection lost has every connection of the pool replaced (InvalidatePoolError), and any
    other error is raised. A connection lost within `seconds` of its last use
    fails its statement like any lost connection, and SQLAlchemy then replaces the pool's connections too.
    """
    dialect = engine.dialect

    def remember_checkin(dbapi_connection: Any, entry: Any) -> None:
        entry.info[CHECKED_IN_AT] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, entry: Any, proxy: Any) -> None:
        checked_in_at = entry.info.get(CHECKED_IN_AT)  # the entry forgets it when it is given a new connection
        if checked_in_at is None or time.monotonic() - checked_in_at <= seconds:
            return  # connected just now, or used moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise InvalidatePoolError(f"an idle pooled connection was lost: {error}") from error
            raise

    event.listen(engine, "checkin", remember_checkin)
    event.listen(engine, "checkout", ping_if_idle)
    KeptReads.ping_after[engine] = seconds


#: The statuses of a psycopg result that carry rows: its cursor's `description` is a list for them (even of no
#: column), None otherwise.
ROW_STATUSES = frozenset({ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, ExecStatus.TUPLES_CHUNK})


class ResultColumns(Sequence):
    """A cursor's description, psycopg's list of `Column`, made from its result when it is first read.

    SQLAlchemy asks the cursor of every statement for its description, and for a statement whose result columns
    it compiled before (every statement of a running app after its first) only looks whether there is one (rows
    or none): psycopg makes a `Column` per column for that (a name decoded, a type looked up, about a microsecond
    each; a score of them for the log-in check). The columns are made as psycopg makes them, from the result the
    cursor holds: read after the cursor moved on to another result, they would describe that one, so that is
    refused."""

    __slots__ = ("_cursor", "_result", "_columns")

    def __init__(self, cursor: psycopg.Cursor, result: Any) -> None:
        self._cursor, self._result = cursor, result
        self._columns: list[psycopg.Column] | None = None

    def columns(self) -> list[psycopg.Column]:
        """psycopg's description of the result, made at the first call."""
        if self._columns is None:
            if self._cursor.pgresult is not self._result:
                raise psycopg.InterfaceError("the cursor has moved on to another result than this description's")
            self._columns = psycopg.Cursor.description.fget(self._cursor) or []  # type: ignore[attr-defined]
        return self._columns

    def __getitem__(self, index: Any) -> Any:
        return self.columns()[index]

    def __len__(self) -> int:
        return self._result.nfields

    def __iter__(self) -> Iterator[psycopg.Column]:
        return iter(self.columns())

    def __eq__(self, other: object) -> bool:
        return self.columns() == (other.columns() if isinstance(other, ResultColumns) else other)

    def __repr__(self) -> str:
        return repr(self.columns())


class DescribedOnReadCursor(psycopg.Cursor):
    """psycopg's (client-side binding, server-side parameters) cursor, whose `description` is `ResultColumns`."""

    @property
    def description(self) -> ResultColumns | None:  # type: ignore[override]
        result = self.pgresult
        if result is not None and (result.nfields or result.status in ROW_STATUSES):
            return ResultColumns(self, result)
        return None


def describe_on_read(engine: Engine) -> None:
    """The engine's psycopg connections make `DescribedOnReadCursor`s (a connection given another cursor class
    through `connect_args` keeps it)."""

    def use_cursor(dbapi_connection: Any, record: Any) -> None:
        if isinstance(dbapi_connection, psycopg.Connection) and dbapi_connection.cursor_factory is psycopg.Cursor:
            dbapi_connection.cursor_factory = DescribedOnReadCursor

    event.listen(engine, "connect", use_cursor)


#: Where a pooled connection's entry keeps the cursor `DriverRead`s run on (the entry forgets it when it is given a
#: new connection, as it forgets CHECKED_IN_AT).
DRIVER_READ_CURSOR = "ssb_driver_read_cursor"


def statements_listened_for(connection: Connection) -> bool:
    """Whether an event listener of the connection, its engine or its dialect is called for each statement (before
    or after it, or to execute it). SQLAlchemy marks the connection or engine once a listener was added, and keeps
    the mark after it is removed (a test's): the listeners are then looked at themselves."""
    if not (connection._has_events or connection.engine._has_events or connection.dialect._has_events):
        return False
    return _listen_for_statements(connection.dispatch, connection.dialect.dispatch)


def _listen_for_statements(each: Any, driver: Any) -> bool:
    """Whether these dispatchers (a connection's or an engine's, and its dialect's) call a listener per statement."""
    return bool(
        each.before_execute
        or each.after_execute
        or each.before_cursor_execute
        or each.after_cursor_execute
        or driver.do_execute
        or driver.do_execute_no_params
        or driver.do_setinputsizes
    )


class DriverSQL:
    """A `DriverRead`'s statement compiled for one dialect, with its types' conversions of the values."""

    def __init__(self, compiled: SQLCompiler) -> None:
        self.compiled = compiled
        self.text = compiled.string
        dialect = compiled.dialect
        escaped = compiled.escaped_bind_names
        self.bind_processors = {
            escaped.get(name, name): processor
            for bind, name in compiled.bind_names.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        # (index, processor) of each column whose type converts what the driver reads, as SQLAlchemy works them out
        # from the first result's description (they may depend on the type the database describes).
        self.result_processors: list[tuple[int, Callable[[Any], Any]]] | None = None
        # (name in the SQL, parameter key, name) of each bound parameter whose value comes from the parameters given
        # (none has a value or callable of its own): then `parameters` picks them itself; else SQLAlchemy's
        # `construct_params` (a bound value of the statement's own, a missing value's error).
        binds = compiled.bind_names.items()
        self.keys: list[tuple[str, str, str]] | None = [
            (escaped.get(name, name), bind.key, name) for bind, name in binds
        ]
        if any(not bind.required or bind.callable is not None for bind, _ in binds):
            self.keys = None

    def parameters(self, params: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """The driver's parameters: each bound value by its name in the SQL, converted by its type. Picked as
        `construct_params` picks them (by key, else by name), without its general steps on every execution."""
        picked = self.picked(params) if self.keys is not None else None
        values: MutableMapping[str, Any] = self.compiled.construct_params(params) if picked is None else picked
        for name, processor in self.bind_processors.items():
            values[name] = processor(values[name])
        return values

    def picked(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Every bound value from `params`; None when one is missing (`construct_params` then raises its error)."""
        values: dict[str, Any] = {}
        for sql_name, key, name in self.keys or ():
            if key in params:
                values[sql_name] = params[key]
            elif name in params:
                values[sql_name] = params[name]
            else:
                return None
        return values

    def converted(self, rows: Sequence[Any], cursor: Any) -> Sequence[Sequence[Any]]:
        """The driver's rows with the values converted by their columns' types."""
        processors = self.result_processors
        if processors is None:
            dialect = self.compiled.dialect
            columns = self.compiled._result_columns
            processors = self.result_processors = [
                (index, processor)
                for index, (column, described) in enumerate(zip(columns, cursor.description, strict=True))
                if (processor := column.type.dialect_impl(dialect).result_processor(dialect, described.type_code))
                is not None
            ]
        if not processors:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, convert in processors:
                values[index] = convert(values[index])
            converted.append(values)
        return converted


class DriverRead:
    """A read (a SELECT) compiled once per dialect and run on the driver's cursor of a SQLAlchemy connection: the
    values of its rows as `Connection.execute` gives them, in tuples (lists, when a type converts its values).

    For every execution `Connection.execute` looks the statement up in the compiled cache, builds an execution
    context (its parameters processed, a new cursor), a CursorResult around the cursor and a Row of each row:
    about 60 µs of CPU for the log-in check that opens every logged-in request, as much as the driver's own work.
    Here the SQL compiled once is sent on a cursor the pooled connection keeps (a new psycopg cursor sets its
    loaders up again for every result, ~20 µs), the values converted by SQLAlchemy's own processors of their
    types (a bound time to UTC, a read one made aware), and a driver error goes through the connection's own
    handling as Core's does (`Connection._handle_dbapi_exception`): a lost connection is invalidated with the
    pool's others, the error wrapped in SQLAlchemy's exception, the cursor closed (a new one is made next time).

    Only where that is all Core would do: psycopg, a connection in an active transaction (SQLAlchemy refuses to run
    in an ended one), without execution options or echo, and nobody listening for its statements: a connection
    event listener (a test's statement counter, Sentry's spans) is handed an execution context this has none of.
    Anywhere else the statement runs through `Connection.execute`, as before.
    """

    def __init__(self, statement: Select) -> None:
        self.statement = statement
        # The compiled SQL per dialect (one per engine), or None for a statement the driver may not run as is.
        self._compiled: WeakKeyDictionary[Dialect, DriverSQL | None] = WeakKeyDictionary()

    def rows(self, connection: Connection, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The statement's rows with these parameters, on `connection`."""
        sql = self.driver_sql(connection) if self.runs_on_driver(connection) else None
        if sql is None:
            return connection.execute(self.statement, params).all()
        fairy = connection.connection  # the pool's proxy of the driver's connection
        cursor = fairy.info.get(DRIVER_READ_CURSOR)
        if cursor is None or cursor.closed:
            cursor = fairy.info[DRIVER_READ_CURSOR] = fairy.cursor()
        parameters = sql.parameters(params)
        try:
            cursor.execute(sql.text, parameters)
            rows = cursor.fetchall()
        except BaseException as error:  # as Core: an interruption invalidates the connection too
            connection._handle_dbapi_exception(error, sql.text, parameters, cursor, None)  # always raises
            raise
        return sql.converted(rows, cursor)

    def rows_alone(self, engine: Engine, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The statement's rows read in autocommit (no BEGIN, nothing to end), outside any transaction of the
        request's (PostgreSQL through psycopg): on the connection the process keeps for such reads (`KeptReads`),
        else on a connection of the engine's pool taken for this read alone and given back at once."""
        kept = KeptReads.of(engine)
        if kept is not None:
            rows = kept.rows(self, engine, params)
            if rows is not None:
                return rows
        return self.rows_on_pooled(engine, params)

    def rows_on_pooled(self, engine: Engine, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`rows_alone` on a connection of the engine's pool, taken for this read alone and given back at once, in
        transactions again: a driver error is handled and raised as Core's (`rows`)."""
        with engine.connect() as connection:
            driver: Any = connection.connection.driver_connection
            driver.autocommit = True
            try:
                return self.rows(connection, params)
            finally:
                if driver.pgconn.transaction_status == TransactionStatus.IDLE:  # not a connection the error broke
                    driver.autocommit = False

    @staticmethod
    def runs_on_driver(connection: Connection) -> bool:
        """Whether running on the driver's cursor is all `Connection.execute` would do on this connection now (a
        connection not in a transaction yet would begin one, which on psycopg sends nothing)."""
        transaction, nested = connection.get_transaction(), connection.get_nested_transaction()
        return (
            connection.dialect.driver == "psycopg"
            and not statements_listened_for(connection)
            and not connection._echo
            and not connection.get_execution_options()
            and (transaction is None or transaction.is_active)
            and (nested is None or nested.is_active)
            and not connection.invalidated
        )

    def driver_sql(self, connection: Connection) -> DriverSQL | None:
        """The statement compiled for the connection's dialect (once), None when its SQL is rewritten per
        execution (expanding or literal-execute parameters) or its parameters are positional."""
        return self.driver_sql_for(connection.dialect)

    def driver_sql_for(self, dialect: Dialect) -> DriverSQL | None:
        """`driver_sql` for a dialect."""
        try:
            return self._compiled[dialect]
        except KeyError:
            pass
        compiled = self.statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        plain = not (compiled.positional or compiled.literal_execute_params or compiled.post_compile_params)
        sql = self._compiled[dialect] = DriverSQL(compiled) if plain else None
        return sql


class KeptReads:
    """The connection a process keeps for the reads that open its requests (the log-in check, the API's token
    check: `DriverRead.rows_alone`), in autocommit, on the driver's cursor, never used for anything else.

    Taking a connection from the pool and giving it back for each read costs more CPU than the read itself on the
    client: the pool's locks and queue, its checkout and checkin events (`ping_after_idle`), the reset on return,
    and SQLAlchemy's Connection around it (about 130 µs of a logged-in page's 1 ms). This connection is made by the
    pool (its connect events and arguments) and then detached from it, so that the pool's size and overflow stay
    whole for the requests' transactions: each process holds one connection more than its pool.

    - A process forked since it was made (gunicorn's workers from the preloading master) forgets it without closing
      it (the socket is the parent's) and makes its own.
    - Idle longer than the engine's `ping_after_idle` seconds, it is pinged first; a lost one is replaced.
    - A driver error on it (the server restarted, the backend ended) closes it, and the read runs again on a pooled
      connection as before (`DriverRead.rows_on_pooled`): the error, if it lasts, is Core's, the pool's connections
      are replaced as Core replaces them, and the next read connects a kept one afresh.
    - One thread at a time (a threaded development server): a read that finds it in use takes the pooled path.
    - Where a listener watches the engine's statements (a test's counter, Sentry's spans), reads take the pooled
      path, through Core (`DriverRead.rows`).
    - Closed when the engine is disposed or collected."""

    _of: "WeakKeyDictionary[Engine, KeptReads]" = WeakKeyDictionary()
    #: engine -> the idle seconds after which its connections are pinged (`ping_after_idle`).
    ping_after: WeakKeyDictionary[Engine, float] = WeakKeyDictionary()

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: int | None = None
        self.proxy: Any = None  # the pool's detached proxy of the driver's connection
        self.cursor: Any = None
        self.used_at = 0.0

    @classmethod
    def of(cls, engine: Engine) -> "KeptReads | None":
        """The engine's kept connection for reads alone; None where the driver is not psycopg."""
        kept = cls._of.get(engine)
        if kept is None:
            if engine.dialect.driver != "psycopg":
                return None
            kept = cls._of[engine] = cls()
            event.listen(engine, "engine_disposed", lambda _: kept.close())
            weakref.finalize(engine, kept.close)
        return kept

    def rows(self, read: DriverRead, engine: Engine, params: Mapping[str, Any]) -> Sequence[Sequence[Any]] | None:
        """`read`'s rows on the kept connection; None when they are to be read on a pooled one instead (in use,
        listened to, a statement the driver may not run as is, or a driver error met here)."""
        if engine_statements_listened_for(engine) or not self.lock.acquire(blocking=False):
            return None
        try:
            try:
                cursor = self._cursor(engine)
                sql = read.driver_sql_for(engine.dialect)
                if sql is None:
                    return None
                parameters = sql.parameters(params)
                cursor.execute(sql.text, parameters)
                rows = sql.converted(cursor.fetchall(), cursor)
            except engine.dialect.loaded_dbapi.Error:
                # Read again on a pooled connection: Core's handling, and its error if it lasts. A connection the
                # error broke (lost, ended by the server) is closed; after a statement's own error it is as usable
                # as before (autocommit: no transaction was left open).
                driver = self.proxy.dbapi_connection if self.proxy is not None else None
                if driver is None or driver.closed or driver.broken:
                    self.close()
                return None
            except BaseException:  # an interruption mid-read: nothing of it may be left on the connection
                self.close()
                raise
            self.used_at = time.monotonic()
            return rows
        finally:
            self.lock.release()

    def _cursor(self, engine: Engine) -> Any:
        """The kept connection's cursor, the connection made (or pinged after idling) first."""
        process = os.getpid()
        if self.process != process:  # made in another process (forked since): its socket is not ours to close
            self.proxy = self.cursor = None
            self.process = process
        if self.proxy is not None:
            seconds = KeptReads.ping_after.get(engine)
            if seconds is not None and time.monotonic() - self.used_at > seconds:
                try:
                    engine.dialect.do_ping(self.proxy.dbapi_connection)
                except engine.dialect.loaded_dbapi.Error:
                    self.close()
        if self.proxy is None:
            proxy = engine.raw_connection()
            proxy.detach()  # the pool forgets it: its size stays whole for the requests' transactions
            driver: Any = proxy.dbapi_connection  # psycopg's connection itself
            driver.autocommit = True
            self.proxy, self.cursor = proxy, proxy.cursor()
            self.used_at = time.monotonic()
        return self.cursor

    def close(self) -> None:
        """Close the kept connection (of this process); the next read makes another."""
        proxy, self.proxy, self.cursor = self.proxy, None, None
        if proxy is not None and self.process == os.getpid():
            try:
                proxy.close()
            except Exception:  # noqa: BLE001, S110 - a connection already lost: nothing more to end
                pass


def engine_statements_listened_for(engine: Engine) -> bool:
    """`statements_listened_for` of the engine and its dialect (a connection made from it inherits their
    listeners)."""
    if not (engine._has_events or engine.dialect._has_events):
        return False
    return _listen_for_statements(engine.dispatch, engine.dialect.dispatch)


# The models' base class. Flask-SQLAlchemy builds `db.Model` from `Base` at run time; type checkers see `Base`.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
migrate = Migrate(render_as_batch=True, compare_type=True)


#: How many session identifiers `SiteLoginManager` keeps per process before starting afresh (one per client
#: address and browser seen).
REMEMBERED_IDENTIFIERS = 4096


class SiteLoginManager(LoginManager):
    """Flask-Login, which does not work out the session identifier, nor look for a pending remember-me operation,
    in an empty session, and works each identifier out once.

    Session protection compares a hash of the client's address and user agent with the one stored at log-in, but
    only when the session holds something: for a visitor (or someone just logged out) Flask-Login's check answers
    "not failed" whatever the hash, yet computes it (a SHA-512) on every request first. A logged-in browser sends
    the same address and user agent request after request: Flask-Login's identifier (`_create_identifier`, made
    of the X-Forwarded-For header or else the peer's address, and the User-Agent header) is kept per process under
    those three values, the same hash without a new SHA-512 object each time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._identifiers: dict[tuple[str | None, str | None, str | None], str] = {}
        self._session_identifier_generator = self._remembered_identifier

    def _remembered_identifier(self) -> str:
        """Flask-Login's session identifier of this request's client, worked out once per address and browser."""
        this = request._get_current_object()  # type: ignore[attr-defined]
        headers = this.headers
        client = (headers.get("X-Forwarded-For"), this.remote_addr, headers.get("User-Agent"))
        identifier = self._identifiers.get(client)
        if identifier is None:
            if len(self._identifiers) >= REMEMBERED_IDENTIFIERS:
                self._identifiers.clear()
            identifier = self._identifiers[client] = create_session_identifier()
        return identifier

    def _session_protection_failed(self) -> bool:
        """False at once for an empty session (Flask-Login's answer for it); Flask-Login's check otherwise."""
        if not session:
            return False
        return super()._session_protection_failed()

    def _update_remember_cookie(self, response: Any) -> Any:
        """Nothing to do for a session with no remember-me operation pending in it (a visitor's, and a logged-in
        browser's every page after the log-in): Flask-Login's step would look the session up three times and the
        app once to do nothing. Flask-Login's step otherwise, and always when every request refreshes the cookie
        (it then marks even an empty session)."""
        ctx = _cv_request.get()  # the request's context: no proxy look-up for its session and app
        if "_remember" not in ctx.session and not ctx.app.config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"):
            return response
        return super()._update_remember_cookie(response)


login_manager = SiteLoginManager()
cache = Cache()


class SiteCSRFProtect(CSRFProtect):
    """Flask-WTF's CSRF protection, which looks at the method before the exemptions.

    A GET or HEAD is never checked, exempt or not; Flask-WTF would first look the view and its blueprint up in
    its exemption lists on every request. The answer is the same, in the other order.
    """

    def protect(self, apply_exemptions: bool = False) -> None:
        """Nothing to check for a method outside WTF_CSRF_METHODS; Flask-WTF's check otherwise. The request and the
        app are read from the request context, one lookup for both."""
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
        if ctx.request.method not in ctx.app.config["WTF_CSRF_METHODS"]:
            return None
        return super().protect(apply_exemptions)


csrf = SiteCSRFProtect()


#: Where a request context keeps the windows its hits counted in (see `HitWindowRateLimiter`).
HIT_WINDOWS = "_ssb_hit_windows"
#: Where a request context keeps the values its hits read beside their count, by key (see `HitWindowRateLimiter`).
HIT_READS = "_ssb_hit_reads"

#: What a hit also reads, registered with `SiteLimiter.read_with_hit`: given the hit's identifiers (Flask-Limiter's
#: key prefix if any, the key function's value, the scope) and the limiter's Redis client, the keys of that Redis to
#: read with the count, in the same script; none for a hit that needs nothing. Called only within a request.
HitReader = Callable[[tuple[str, ...], Redis], Sequence[str]]


class HitWindowRateLimiter(FixedWindowRateLimiter):
    """The fixed-window strategy on Redis, whose hit also reads back the window it counted in.

    Flask-Limiter hits a view's limit before the view (one round trip), then reads the window back for the
    X-RateLimit headers and Retry-After after it (a GET and a TTL: two more). Here the hit's script returns the
    count and the time to live with the increment, and the request remembers that window (on its request
    context, never across requests), so the headers cost no round trip. The figures are those of the request's
    own hit (`remaining` after its deduction, as Flask-Limiter documents it); a window that ended meanwhile, or a
    key never hit in this request, is read from Redis as before.

    The same script can read other keys of that Redis for the request, which would otherwise cost a round trip of
    their own (the entitlements' entry and generation: app/services/entitlements.py): the `readers` name them, the
    script reads them in the step that counts (raw, without the limiter's key prefix), and the request context
    keeps their values (`take_read_with_hit`), never across requests. A key already read in this request is not
    read again.
    """

    SCRIPT_INCR_EXPIRE_TTL = b"""
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
local answer = {current, redis.call("ttl", KEYS[1])}
for i = 2, #KEYS do
    answer[i + 1] = redis.call("get", KEYS[i])
end
return answer
"""

    def __init__(self, storage: RedisStorage, readers: Sequence[HitReader] = ()) -> None:
        super().__init__(storage)
        self.redis = storage
        self.readers = readers
        self.incr_expire_ttl = storage.get_connection().register_script(self.SCRIPT_INCR_EXPIRE_TTL)

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """limits' `incr` (INCRBY, EXPIRE when new) and its TTL in one script, with the keys the readers name for
        this request; True while within the limit."""
        key = item.key_for(*identifiers)
        reads = self.keys_to_read(identifiers)
        try:
            count, ttl, *values = self.incr_expire_ttl(
                [self.redis.prefixed_key(key), *reads], [item.get_expiry(), cost]
            )
        except self.redis.base_exceptions as error:  # as limits' own storage calls raise them
            if self.redis.wrap_exceptions:
                raise StorageError(error) from error
            raise
        windows = self.windows_of_request()
        if windows is not None:
            windows[key] = WindowStats(max(int(ttl), 0) + time.time(), max(0, item.amount - int(count)))
        if reads:
            reads_of_request().update(zip(reads, values, strict=True))
        return int(count) <= item.amount

    def keys_to_read(self, identifiers: tuple[str, ...]) -> list[str]:
        """What the readers want read with this hit, less what this request read already (none outside a request)."""
        if not self.readers or not request_ctx:
            return []
        client = cast(Redis, self.redis.get_connection())
        wanted = [key for reader in self.readers for key in reader(identifiers, client)]
        if not wanted:
            return wanted
        read = reads_of_request()
        return [] if all(key in read for key in wanted) else wanted

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        """The window this request's hit counted in while it lasts; read from Redis otherwise."""
        windows = self.windows_of_request()
        window = windows.get(item.key_for(*identifiers)) if windows else None
        if window is not None and window.reset_time > time.time():
            return window
        return super().get_window_stats(item, *identifiers)

    def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        windows = self.windows_of_request()
        if windows:
            windows.pop(item.key_for(*identifiers), None)
        super().clear(item, *identifiers)

    @staticmethod
    def windows_of_request() -> dict[str, WindowStats] | None:
        """The current request's windows (None outside a request)."""
        if not request_ctx:
            return None
        return memo_of_request(HIT_WINDOWS)


def reads_of_request() -> dict[str, Any]:
    """The values the current request's hits read beside their count, by key (call within a request)."""
    return memo_of_request(HIT_READS)


def memo_of_request(name: str) -> dict[str, Any]:
    """The dict kept under `name` on the current request's context (made empty on first use; never shared by two
    requests). Call within a request."""
    ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
    memo = getattr(ctx, name, None)
    if memo is None:
        memo = {}
        setattr(ctx, name, memo)
    return memo


def take_read_with_hit(*keys: str) -> list[Any] | None:
    """The values of `keys` as this request's rate-limit hit read them (None for a missing key), once: they are
    forgotten as they are taken. None when the hit did not read every one of them (or outside a request)."""
    if not request_ctx:
        return None
    read = getattr(request_ctx._get_current_object(), HIT_READS, None)  # type: ignore[attr-defined]
    if not read or not all(key in read for key in keys):
        return None
    return [read.pop(key) for key in keys]


def forget_read_with_hit(*keys: str) -> None:
    """Drop what this request's hit read of `keys` (a write to them made it stale); nothing outside a request."""
    if not request_ctx:
        return
    read = getattr(request_ctx._get_current_object(), HIT_READS, None)  # type: ignore[attr-defined]
    if read:
        for key in keys:
            read.pop(key, None)


#: Flask-Limiter's after-request step (a private method, registered as `partial(Limiter.__inject_headers, limiter)`).
FLASK_LIMITER_INJECT_HEADERS = Limiter._Limiter__inject_headers  # type: ignore[attr-defined]


class SiteLimiter(Limiter):
    """Flask-Limiter that does nothing on a request it has nothing to check, and counts a hit in one round trip.

    Its before-request pass applies only the application, default, blueprint and meta limits (a view's own
    `@limiter.limit` is checked by its decorator, which this does not touch). Most pages have none of them, yet
    Flask-Limiter resolves that anew on every request; here it is resolved once per endpoint and app. While the
    storage is down, or when limits were hinted at run time, every request takes the full path as before.

    Its after-request (conditional deductions, X-RateLimit headers) and teardown steps read a per-request state
    that only a checked limit creates: on a request that checked none there is nothing to deduct, report or reset,
    so they return at once instead of creating that state to find it empty. A fixed window on Redis counts with
    `HitWindowRateLimiter` (the headers' figures come with the hit, and whatever `read_with_hit` asks for).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hit_readers: list[HitReader] = []

    def read_with_hit(self, reader: HitReader) -> HitReader:
        """Register a `HitReader`: the keys it names are read by a hit's own script, on a fixed window on Redis
        (elsewhere, and while the storage is down, nothing is read: the keys' users read them as they would
        without this)."""
        self.hit_readers.append(reader)
        return reader

    def init_app(self, app: Flask) -> None:
        super().init_app(app)
        release_context = self._Limiter__release_context  # type: ignore[attr-defined]
        after, teardown = app.after_request_funcs.get(None, []), app.teardown_request_funcs.get(None, [])
        for index, hook in enumerate(after):
            if getattr(hook, "func", None) is FLASK_LIMITER_INJECT_HEADERS and getattr(hook, "args", ()) == (self,):
                after[index] = self._inject_headers_if_checked
        for index, hook in enumerate(teardown):
            if hook == release_context:
                teardown[index] = self._release_context_if_checked
        if type(self._limiter) is FixedWindowRateLimiter and type(self._storage) is RedisStorage:
            self._limiter = HitWindowRateLimiter(self._storage, self.hit_readers)

    def _checked_any_limit(self) -> bool:
        """Whether this request created Flask-Limiter's per-request state (any limit checked, or asked about)."""
        contexts = getattr(request_ctx._get_current_object(), "_limiter_request_context", None)  # type: ignore[attr-defined]
        return contexts is not None and self in contexts

    def _inject_headers_if_checked(self, response: Any) -> Any:
        if not self._checked_any_limit():
            return response
        return FLASK_LIMITER_INJECT_HEADERS(self, response)

    def _release_context_if_checked(self, exc: BaseException | None = None) -> None:
        if self._checked_any_limit():
            self._Limiter__release_context(exc)  # type: ignore[attr-defined]

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if in_middleware and callable_name is None and not self._storage_dead and self._nothing_to_check():
            return
        super()._check_request_limit(callable_name, in_middleware)

    def _nothing_to_check(self) -> bool:
        endpoint = request.endpoint
        if not endpoint or self._meta_limits or self.limit_manager.has_hints(endpoint):
            return False
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        known: dict[str, bool] = app.extensions.setdefault("limiter_unchecked_endpoints", {})
        if endpoint not in known:
            view = app.view_functions.get(endpoint)
            name = get_qualified_name(view) if view else ""
            defaults, decorated = self.limit_manager.resolve_limits(
                app, endpoint, request.blueprint, name, True, name in self._marked_for_limiting
            )
            known[endpoint] = not defaults and not decorated
        return known[endpoint]


# Storage comes from RATELIMIT_STORAGE_URI: Redis in production and tests, memory in a fresh clone.
limiter = SiteLimiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)
jwt = JWTManager()


class SiteCORS(CORS):
    """flask-cors for the paths under one prefix, whose after-request step runs only on a path that can match.

    flask-cors matches every response's unquoted path against its resources and logs its verdict; with the one
    resource `PREFIX/*` (a regular expression: PREFIX, then any number of slashes), only a path starting with
    PREFIX can match, or one holding `%` (unquoted, it could start with PREFIX). Any other path returns at once;
    these two go through flask-cors' own step, as do error responses (flask-cors wraps the error handlers). A
    prefix holding a pattern character (`.` in `/api/v1.0` matches any character) keeps flask-cors' step on every
    path.
    """

    def init_app(self, app: Flask, **kwargs: Any) -> None:  # type: ignore[override]
        """`CORS.init_app` with `resources={f"{prefix}/*": {"origins": origins}}`, from `prefix` and `origins`."""
        prefix, origins = kwargs.pop("prefix"), kwargs.pop("origins")
        after = app.after_request_funcs.setdefault(None, [])
        known = len(after)
        super().init_app(app, resources={f"{prefix}/*": {"origins": origins}}, **kwargs)
        (cors_after_request,) = after[known:]
        if re.escape(prefix) != prefix:  # a prefix with pattern characters ("/api/v1.0") matches more than itself
            return

        def cors_under_prefix(response: Any) -> Any:
            path = _cv_request.get().request.path
            if path.startswith(prefix) or "%" in path:
                return cors_after_request(response)
            return response

        after[known] = cors_under_prefix


cors = SiteCORS()
mail = Mail()


def cache_redis(kind: str = "write"):
    """The redis-py client behind Flask-Caching's RedisCache (`kind` "read" or "write"), or None for another
    backend (SimpleCache in a fresh clone). Going to it directly stores plain text that `redis-cli GET` shows
    as is (`cache.set` would pickle it), and gives the webhook fast path its `webhook_processed:<id>` keys."""
    return getattr(cache.cache, f"_{kind}_client", None)


class KeptConnectionReads(Redis):
    """redis-py's client on one connection (`single_connection_client`), whose GET is sent on that connection and
    its reply read back directly.

    redis-py runs every command through its dispatch (a retry policy wrapping a closure, the operation's duration
    recorded for its metrics, a check whether the connection must reconnect): about 40 µs of a GET's 90 µs of CPU
    on the client. A page's cache read is one GET: here it is packed, sent and read under the client's lock, as
    redis-py sends and reads it. A GET that fails is raised as redis-py raises it, its connection closed, and the
    next GET connects again: what redis-py does when its retry policy retries nothing (the cache's, as configured).
    A connection whose policy retries goes through redis-py's dispatch, which retries."""

    def get(self, name: Any) -> Any:
        """The value of `name` (bytes, or None when missing), as `Redis.get` answers it."""
        connection = self.connection
        if connection is None or connection.retry.get_retries():  # not one connection, or retries: redis-py's path
            return super().get(name)
        with self.single_connection_lock:
            try:
                connection.send_packed_command(connection.pack_command("GET", name), check_health=False)
                value = connection.read_response()
            except BaseException:
                connection.disconnect()  # nothing of the failed GET left to read on it (redis-py's failure step)
                raise
            if connection.should_reconnect():  # the server announced maintenance: as redis-py's dispatch does
                connection.disconnect()
            return value


#: Where an app keeps the cache its pages read through a connection of their own (`page_cache`): (the process, the
#: backend it copies, the copy).
PAGE_CACHE = "ssb_page_cache"


def page_cache() -> Any:
    """The cache a page reads its entries from (the billing page's Stripe summary, the account page's outlook):
    Flask-Caching's backend, or on Redis a copy of it (the same keys, prefix and serializer) reading through one
    connection of the cache's pool that the process keeps for these reads.

    A GET through the pool takes a connection from it and gives it back, both steps guarded (redis-py locks the
    pool, checks the connection holds nothing unread, records its metrics' states): about a third of the GET's CPU.
    A client kept on one connection (redis-py's `single_connection_client`, locked per command) does none of that,
    and sends its GET without redis-py's command dispatch (`KeptConnectionReads`).
    The connection is taken in the process that reads, and again in a process forked since (gunicorn forks its
    workers from the master that built the app: a connection of the master's would be shared by them all); one
    lost is connected again at the next command, as the pool's are, with the same retries and time-outs."""
    # `cache.cache`, from the app looked up once (Flask-Caching's property looks `current_app` up twice).
    extensions = current_app._get_current_object().extensions  # type: ignore[attr-defined]
    backend = extensions["cache"][cache]
    client = getattr(backend, "_read_client", None)
    if not isinstance(client, Redis):
        return backend
    kept = extensions.get(PAGE_CACHE)
    process = os.getpid()
    if kept is None or kept[0] != process or kept[1] is not backend:
        reads: Any = copy.copy(backend)
        reads._read_client = reads._write_client = KeptConnectionReads(
            connection_pool=client.connection_pool, single_connection_client=True
        )
        copies = PageCacheCopies(reads, Redis(connection_pool=client.connection_pool), page_cache_drops())
        kept = extensions[PAGE_CACHE] = (process, backend, copies)
    return kept[2]


def page_cache_drops() -> str:
    """The channel on which the processes keeping copies of page-cache entries hear which were dropped: the app
    cache's key prefix, then PAGE_CACHE_DROPS (a Redis shared with another app hears its own)."""
    prefix = getattr(cache.cache, "key_prefix", None) or ""
    return (prefix if isinstance(prefix, str) else "") + PAGE_CACHE_DROPS


#: The channel on which the app says which page-cache entries a commit dropped (`PageCacheCopies`), after the cache's
#: key prefix.
PAGE_CACHE_DROPS = "page_cache_drops"
#: How long a process serves its copy of a page-cache entry before reading the entry again (its upper bound on a
#: drop it did not hear of: a Redis flushed by hand, a subscription lost mid-message).
PAGE_COPY_SECONDS = 60.0
#: How many entries a process copies before starting afresh.
PAGE_COPIES = 4096


class PageCacheCopies:
    """The page cache as a process reads it (`page_cache`): each entry read from Redis is kept by the process and
    served again without a round trip, until the app says a commit dropped it.

    A page's cache read was one round trip to Redis per logged-in view (the billing page's Stripe summary, the
    account page's outlook): about 0.15 ms of the two cores' time per view, counting the server and the sockets.
    Every commit that drops such an entry also publishes its key on PAGE_CACHE_DROPS (`CacheWrites.publish`, in the
    same pipeline as the delete), and each process listens there on a connection of its own: before serving a copy,
    it reads what arrived since, without waiting (one `recv` that finds nothing, on the common path), and forgets
    every key named. A copy is kept at most PAGE_COPY_SECONDS.

    Copies are only made once Redis has confirmed the subscription: a read sent after that is answered after any
    drop that could make it stale is published to this process. A listening connection that fails (Redis restarted,
    the network) forgets every copy and reads through to Redis until subscribed again; reads never wait on it."""

    def __init__(self, reads: Any, client: Redis, channel: str) -> None:
        self.reads = reads
        self.client = client
        self.channel = channel
        self.pubsub: Any = None
        self.subscribed = False
        self.copies: dict[str, tuple[Any, float]] = {}
        #: The listening connection's socket, and a poll object watching it (`nothing_arrived`).
        self.watched: Any = None
        self.poll: Any = None

    def get(self, key: str) -> Any:
        """The entry `key` (None when missing), as the cache's `get` answers it."""
        if not self.listening():
            return self.reads.get(key)
        now = time.monotonic()
        held = self.copies.get(key)
        if held is not None and held[1] > now:
            return held[0]
        value = self.reads.get(key)
        if value is not None:
            if len(self.copies) >= PAGE_COPIES:
                self.copies.clear()
            self.copies[key] = (value, now + PAGE_COPY_SECONDS)
        return value

    def listening(self) -> bool:
        """Whether copies may be served: subscribed, and every drop that arrived applied. Never raises."""
        try:
            if self.pubsub is None:
                self.pubsub = self.client.pubsub()
                self.pubsub.subscribe(self.channel)
            elif self.subscribed and self.nothing_arrived():
                return True
            while (message := self.pubsub.get_message(timeout=0.0)) is not None:
                kind = message.get("type")
                if kind == "subscribe":
                    self.subscribed = True
                elif kind == "message":
                    data = message.get("data")
                    for key in (data.decode() if isinstance(data, bytes) else str(data)).split():
                        self.copies.pop(key, None)
            return self.subscribed
        except Exception:  # noqa: BLE001 - Redis unreachable: read through it (or fail there), copy nothing
            self.forget()
            return False

    def nothing_arrived(self) -> bool:
        """Whether the listening connection's socket has nothing to read (a zero-timeout poll, one system call). Each
        look reads messages until redis-py finds none, buffered or on the socket, so an idle socket means nothing
        new; redis-py's own look at it (`get_message`) costs 3% of a logged-in page. A socket closed or in error
        polls as readable, and redis-py then meets the error."""
        connection = self.pubsub.connection
        sock = getattr(connection, "_sock", None) if connection is not None else None
        if sock is None:
            return False
        if sock is not self.watched:  # a new connection (redis-py reconnected)
            self.poll = select.poll()
            self.poll.register(sock, select.POLLIN | select.POLLPRI)
            self.watched = sock
        return not self.poll.poll(0)

    def forget(self) -> None:
        """Drop every copy and the subscription (subscribed again at the next read)."""
        self.copies.clear()
        self.subscribed = False
        self.watched = self.poll = None
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001, S110 - a connection already lost: nothing more to end
                pass


#: The one RQ queue of the app's slow work (mail delivery, the scheduled jobs).
QUEUE_NAME = "ssb"


def task_queue() -> Queue | None:
    """The RQ queue on `TASK_QUEUE_URL` (built once per app), or None when no queue is configured (a fresh clone).

    Short socket timeouts: when Redis is down, enqueueing fails in a second instead of hanging a request."""
    url = current_app.config.get("TASK_QUEUE_URL")
    if not url:
        return None
    queue = current_app.extensions.get("task_queue")
    if queue is None:
        connection = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        queue = current_app.extensions["task_queue"] = Queue(QUEUE_NAME, connection=connection)
    return queue
