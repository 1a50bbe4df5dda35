"""The logged-in person's rows that every page of theirs shows, read once per request.

The log-in check (`logged_in_user`) reads the user, their live server-side session and their subscriptions that
are not over in one statement: the payment banner every page carries, the account page and the billing page then
read the subscriptions from this request's memo instead of asking the database again. The statement reads columns
only: the user is made from its columns (`_persistent_user`), persistent in the session as a query would have
loaded it — once the request makes a session; a page that reads nothing more makes none — without the ORM's
execution and loading of rows (about 150 µs of CPU on every logged-in request, a fifth of the check). The statement, compiled once, runs on the driver's cursor (`extensions.DriverRead`), without
Core's execution context and result around it (about 60 µs more), on a pooled connection of its own when the
session has not begun (`_first_read`). A subscription comes as a `SubscriptionView`: the values those pages show,
its plan taken from the catalogue every process keeps (so the statement reads no plan, and no ORM object is made
for it).

The API's token check (`token_user`) reads the same way for the token family's row: the token's user and its live
family in one statement (the log-in check's, without the subscriptions: most API routes show none, and a gate reads
the entitlements cache), run as the log-in check runs, the user persistent in the session for the token's user
lookup and the view. The API's subscription answer reads the subscriptions here (one statement, after the token
check): the plan it states and the features it lists then come from the same reading.

A page may have more of its own read by the same statement (`read_with_login_check`: columns over `:user_id`,
for one endpoint); the page then takes them from `page_values` instead of a statement of its own.

The memo lives on `flask.g` and only within one transaction: every commit or rollback of the session drops it, so
a page rendered after a change (a sync from Stripe, a plan change) reads the rows afresh. Code that changes
subscriptions keeps reading them with `app.services.queries` (fresh, lockable, ORM rows), never from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import g, has_app_context, has_request_context, request
from sqlalchemy import ColumnElement, Engine, and_, bindparam, event, literal, literal_column, select
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.base import manager_of_class

from app.extensions import DriverRead, autocommit_when_idle, db
from app.models import ACCESS_STATUSES, LIVE_STATUSES, AuthSession, User, UserSubscription
from app.services import sessions
from app.services.catalog import PlanView, plan_view

_MEMO = "_viewer_subscriptions"
_PAGE_MEMO = "_viewer_page_values"
_ROWS_MEMO = "_viewer_rows"


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """A subscription as the logged-in pages show it: the row's values as the log-in check read them, its plan
    from the catalogue. Read-only: code that changes a subscription reads the row (`app.services.queries`)."""

    id: int
    plan_id: int
    billing_cycle: str
    status: str
    stripe_subscription_id: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    created_at: datetime
    updated_at: datetime
    plan: PlanView


#: The columns of a SubscriptionView, in the order of its fields (its plan is looked up by `plan_id`).
_COLUMNS = (
    UserSubscription.id,
    UserSubscription.plan_id,
    UserSubscription.billing_cycle,
    UserSubscription.status,
    UserSubscription.stripe_subscription_id,
    UserSubscription.current_period_end,
    UserSubscription.cancel_at_period_end,
    UserSubscription.created_at,
    UserSubscription.updated_at,
)
_WIDTH = len(_COLUMNS)


def sql_literals(values: Sequence[str]) -> list[ColumnElement[str]]:
    """Constant strings written into a statement's SQL, quoted as SQLAlchemy writes a literal value. An `IN` of
    them is part of the statement compiled once per process; `in_(values)` is an expanding parameter instead,
    which SQLAlchemy rewrites into the SQL and its parameters on every execution."""
    return [literal_column(str(literal(value).compile(compile_kwargs={"literal_binds": True}))) for value in values]


#: A subscription that is not over (LIVE_STATUSES), in the statements' own SQL.
_LIVE = UserSubscription.status.in_(sql_literals(LIVE_STATUSES))

#: The user's columns, and the names of the attributes they load (`_persistent_user`).
_USER_COLUMNS = tuple(User.__table__.columns)
_USER_KEYS = tuple(User.__mapper__.get_property_by_column(column).key for column in _USER_COLUMNS)
_USER_WIDTH = len(_USER_COLUMNS)
_USER_CLASS_MANAGER = manager_of_class(User)
_USER_MAPPER = User.__mapper__

#: The log-in check and the page's subscriptions in one statement, built once (compiled once per process): the
#: user's columns, then the columns of one subscription per row (NULLs for a user without one).
_LOGGED_IN = (
    select(*_USER_COLUMNS, *_COLUMNS)
    .join(AuthSession, AuthSession.user_id == User.id)
    .outerjoin(UserSubscription, and_(UserSubscription.user_id == User.id, _LIVE))
    .where(sessions.LIVE_SESSION)
)
_SUBSCRIPTIONS = select(*_COLUMNS).where(UserSubscription.user_id == bindparam("user_id"), _LIVE)

#: The log-in check, run on the driver's cursor.
_LOGGED_IN_READ = DriverRead(_LOGGED_IN)
#: The API's token check: the user of a live token family, without the subscriptions (most API routes show none; a
#: gate reads the entitlements cache, and the subscription answer reads them after the gate: `token_user`).
_TOKEN_USER_READ = DriverRead(
    select(*_USER_COLUMNS).join(AuthSession, AuthSession.user_id == User.id).where(sessions.LIVE_SESSION)
)

#: endpoint -> (the log-in statement with the page's columns added, their count, the page's own parameters).
_PAGES: dict[str, tuple[DriverRead, int, Callable[[], dict[str, Any]]]] = {}


def read_with_login_check(
    endpoint: str, columns: Sequence[ColumnElement[Any]], params: Callable[[], dict[str, Any]]
) -> None:
    """On `endpoint`'s page, the log-in check also reads `columns` (scalar expressions over `:user_id` and the
    names `params()` gives), so that the page needs no statement of its own for them (`page_values`). The
    statement is built here once (compiled once per process). The columns must only read: the check may run in
    autocommit (`_first_read`), where a lock or a write of theirs would not last until the request's end."""
    _PAGES[endpoint] = (DriverRead(_LOGGED_IN.add_columns(*columns)), len(columns), params)


def logged_in_user(session_id: object, user_id: int) -> User | None:
    """The user of a live browser session with this id, None otherwise; the user's subscriptions that are not
    over (and the page's own columns, `read_with_login_check`) come in the same statement and are kept for the
    request."""
    params = sessions.live_params(session_id, user_id, sessions.WEB)
    if params is None:
        return None
    page = _PAGES.get(request.endpoint or "") if has_request_context() else None
    read = _LOGGED_IN_READ
    if page is not None:
        read = page[0]
        params = {**page[2](), **params}  # the page's own values never replace the log-in check's
    rows = _first_read(read, params)
    if not rows:
        return None
    start, end = _USER_WIDTH, _USER_WIDTH + _WIDTH
    _remember(user_id, [_view(row[start:end]) for row in rows if row[start] is not None])
    if has_app_context():
        setattr(g, _ROWS_MEMO, (user_id, rows))
        if page is not None:
            setattr(g, _PAGE_MEMO, (user_id, tuple(rows[0][end : end + page[1]])))
    return _persistent_user(rows[0][:_USER_WIDTH])


def token_user(family_id: object, user_id: int) -> User | None:
    """The user of a live API token family with this id, None otherwise (revoked: logged out everywhere, a password
    change, a refresh token used twice; expired; the user deleted): the log-in check for the family's row instead
    of a browser session's, run as it runs. The user is made persistent from its columns, so that the token's user
    lookup and the view find it in the session without a statement of their own."""
    params = sessions.live_params(family_id, user_id, sessions.API)
    if params is None:
        return None
    rows = _first_read(_TOKEN_USER_READ, params)
    return _persistent_user(rows[0]) if rows else None


def _persistent_user(values: Sequence[Any]) -> User:
    """The ORM user of these column values (`_USER_COLUMNS`), persistent in the session as a query would load it:
    its attributes loaded (no change pending), its relationships loaded on first use, changes to it flushed at
    the next flush. The session's own instance when it has one already (as a query gives it back). A request that
    has not made its session yet makes none for it: the user joins the session when the request makes one
    (`SiteSQLAlchemy.persistent_when_used`), and a page that reads nothing more ends without any."""

    key = _USER_MAPPER.identity_key_from_primary_key((values[0],))

    def make() -> User:
        user = _USER_CLASS_MANAGER.new_instance()  # no __init__: nothing is set through the attribute events
        user.__dict__.update(zip(_USER_KEYS, values, strict=True))
        # Detached with its identity, as `make_transient_to_detached` leaves it: a new state has no history to
        # reset, and the one attribute not in __dict__ (its subscriptions, a relationship) loads on first use
        # whether or not it is marked expired; working out and expiring the unloaded attributes costs 3% of a page.
        instance_state(user).key = key
        return user

    return db.persistent_when_used(key, make)


def _first_read(read: DriverRead, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
    """The rows of a read, which on PostgreSQL opens no transaction on the server when it is the first statement
    of the session's transaction (as the log-in check is on every request): it runs in autocommit, and the driver
    is back in transactions for whatever follows. A page that only reads makes one round trip instead of three
    (no BEGIN, and no ROLLBACK when the session ends, there being no transaction to end); a request that goes on
    to write has its transaction begin at its next statement, as at READ COMMITTED every statement reads its own
    snapshot anyway. A session holding changes not yet flushed reads in its transaction: its autoflush must not
    write outside one.

    The statement reads columns only (on the driver's cursor, or as Core runs it where the engine's events
    listen: `DriverRead`). Before the session's transaction has begun (the log-in check of every request), it
    runs on a connection of the pool of its own, given back as soon as it has run: the session holds no connection
    for a page that reads nothing more (taking one for the session, then ending its transaction and giving it
    back at the request's end, costs about 40 µs of CPU more); whatever the request reads or writes next takes
    one then. Otherwise it runs on the session's connection, after its autoflush as `Session.execute` would."""
    if not db.session.registry.has():  # no session made yet in this context: it has nothing to read in
        engine = db.engine
        if engine.dialect.driver == "psycopg":
            return read.rows_alone(engine, params)
    session = db.session()  # the request's Session itself: each attribute of the scoped proxy looks it up again
    if not session.in_transaction():  # no connection, no change pending: nothing of the session's to read in
        bind = session.get_bind()
        if isinstance(bind, Engine) and bind.dialect.driver == "psycopg":  # not a test's external transaction
            return read.rows_alone(bind, params)
    with autocommit_when_idle() as connection:
        if session.autoflush:
            session.flush()  # nothing to do (and nothing sent) unless changes are pending
        return read.rows(connection, params)


def page_values(user_id: int) -> tuple[Any, ...] | None:
    """The page's own columns (`read_with_login_check`) as the log-in check read them in this transaction, in
    their order; None when they were not read (another page, or a commit or rollback since)."""
    memo = g.get(_PAGE_MEMO)
    return memo[1] if memo is not None and memo[0] == user_id else None


def read_values(user_id: int) -> tuple[tuple[Any, ...], ...] | None:
    """Every value the log-in check read in this transaction (the user's columns, their subscriptions that are
    not over, the page's own columns), row by row: what the rows of the user's pages are rendered from, as a key
    (`templating.KeptPages`). None when they were not read, or a commit or rollback came since (the rows may
    have changed) — and for another user."""
    memo = g.get(_ROWS_MEMO)
    if memo is None or memo[0] != user_id:
        return None
    return tuple(tuple(row) for row in memo[1])


def subscriptions(user_id: int) -> list[SubscriptionView]:
    """The user's subscriptions that are not over (LIVE_STATUSES), newest first, each with its plan: from this
    request's memo, else in one statement (then kept)."""
    memo = g.get(_MEMO)
    if memo is not None and memo[0] == user_id:
        return memo[1]
    return _remember(user_id, [_view(row) for row in db.session.execute(_SUBSCRIPTIONS, {"user_id": user_id})])


def live_subscription(user_id: int) -> SubscriptionView | None:
    """As `queries.live_subscription`: the newest subscription that is not over, access or not."""
    rows = subscriptions(user_id)
    return rows[0] if rows else None


def effective_subscription(user_id: int) -> SubscriptionView | None:
    """As `queries.effective_subscription`: the newest subscription that grants access now."""
    return next((row for row in subscriptions(user_id) if row.status in ACCESS_STATUSES), None)


def paid_subscription(user_id: int) -> SubscriptionView | None:
    """As `subscriptions.paid_subscription`: the live subscription unless it is to the $0 price (the Free plan)."""
    subscription = live_subscription(user_id)
    if subscription is None or subscription.plan.is_free:
        return None
    return subscription


def _view(values: Sequence[Any]) -> SubscriptionView:
    id_, plan_id, cycle, status, stripe_id, period_end, cancel_at_period_end, created_at, updated_at = values
    return SubscriptionView(
        id_,
        plan_id,
        cycle,
        status,
        stripe_id,
        period_end,
        cancel_at_period_end,
        created_at,
        updated_at,
        plan_view(plan_id),
    )


def _remember(user_id: int, rows: list[SubscriptionView]) -> list[SubscriptionView]:
    rows.sort(key=lambda row: row.created_at, reverse=True)
    if has_app_context():
        setattr(g, _MEMO, (user_id, rows))
    return rows


@event.listens_for(db.session, "after_commit")
@event.listens_for(db.session, "after_rollback")
def _forget(session) -> None:
    """A commit or rollback ends the transaction the memo was read in: the next reader reads afresh."""
    if has_app_context():
        g.pop(_MEMO, None)
        g.pop(_PAGE_MEMO, None)
        g.pop(_ROWS_MEMO, None)
