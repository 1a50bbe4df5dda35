"""The logged-in person's rows that every page of theirs shows, read once per request.

The log-in check (`logged_in_user`) reads the user, their live server-side session and their subscriptions that
are not over (with each one's plan) in one statement: the payment banner every page carries, the account page and
the billing page then read the subscriptions from this request's memo instead of asking the database again.

A page may have more of its own read by the same statement (`read_with_login_check`: columns over `:user_id`,
for one endpoint); the page then takes them from `page_values` instead of a statement of its own.

The memo lives on `flask.g` and only within one transaction: every commit or rollback of the session drops it, so
a page rendered after a change (a sync from Stripe, a plan change) reads the rows afresh. Code that changes
subscriptions keeps reading them with `app.services.queries` (fresh, lockable), never from here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import g, has_app_context, has_request_context, request
from sqlalchemy import ColumnElement, Select, and_, bindparam, event, select
from sqlalchemy.orm import contains_eager

from app.extensions import db
from app.models import ACCESS_STATUSES, LIVE_STATUSES, AuthSession, SubscriptionPlan, User, UserSubscription
from app.services import sessions

_MEMO = "_viewer_subscriptions"
_PAGE_MEMO = "_viewer_page_values"


#: The log-in check and the page's subscriptions in one statement, built once (compiled once per process).
_LOGGED_IN = (
    select(User, UserSubscription)
    .join(AuthSession, AuthSession.user_id == User.id)
    .outerjoin(
        UserSubscription,
        and_(UserSubscription.user_id == User.id, UserSubscription.status.in_(LIVE_STATUSES)),
    )
    .outerjoin(SubscriptionPlan, SubscriptionPlan.id == UserSubscription.plan_id)
    .options(contains_eager(UserSubscription.plan))
    .where(sessions.LIVE_SESSION)
)
_SUBSCRIPTIONS = (
    select(UserSubscription)
    .join(SubscriptionPlan, SubscriptionPlan.id == UserSubscription.plan_id)
    .options(contains_eager(UserSubscription.plan))
    .where(UserSubscription.user_id == bindparam("user_id"), UserSubscription.status.in_(LIVE_STATUSES))
)


#: endpoint -> (the log-in statement with the page's columns added, their count, the page's own parameters).
_PAGES: dict[str, tuple[Select, int, Callable[[], dict[str, Any]]]] = {}


def read_with_login_check(
    endpoint: str, columns: Sequence[ColumnElement[Any]], params: Callable[[], dict[str, Any]]
) -> None:
    """On `endpoint`'s page, the log-in check also reads `columns` (scalar expressions over `:user_id` and the
    names `params()` gives), so that the page needs no statement of its own for them (`page_values`). The
    statement is built here once (compiled once per process)."""
    _PAGES[endpoint] = (_LOGGED_IN.add_columns(*columns), len(columns), params)


def logged_in_user(session_id: object, user_id: int) -> User | None:
    """The user of a live browser session with this id, None otherwise; the user's subscriptions that are not
    over (and the page's own columns, `read_with_login_check`) come in the same statement and are kept for the
    request."""
    params = sessions.live_params(session_id, user_id, sessions.WEB)
    if params is None:
        return None
    page = _PAGES.get(request.endpoint or "") if has_request_context() else None
    statement = _LOGGED_IN
    if page is not None:
        statement = page[0]
        params.update(page[2]())
    rows = db.session.execute(statement, params).all()
    if not rows:
        return None
    _remember(user_id, [row[1] for row in rows if row[1] is not None])
    if page is not None and has_app_context():
        setattr(g, _PAGE_MEMO, (user_id, tuple(rows[0][2 : 2 + page[1]])))
    return rows[0][0]


def page_values(user_id: int) -> tuple[Any, ...] | None:
    """The page's own columns (`read_with_login_check`) as the log-in check read them in this transaction, in
    their order; None when they were not read (another page, or a commit or rollback since)."""
    memo = g.get(_PAGE_MEMO)
    return memo[1] if memo is not None and memo[0] == user_id else None


def subscriptions(user_id: int) -> list[UserSubscription]:
    """The user's subscriptions that are not over (LIVE_STATUSES), newest first, each with its plan loaded: from
    this request's memo, else in one statement (then kept)."""
    memo = g.get(_MEMO)
    if memo is not None and memo[0] == user_id:
        return memo[1]
    return _remember(user_id, list(db.session.scalars(_SUBSCRIPTIONS, {"user_id": user_id})))


def live_subscription(user_id: int) -> UserSubscription | None:
    """As `queries.live_subscription`: the newest subscription that is not over, access or not."""
    rows = subscriptions(user_id)
    return rows[0] if rows else None


def effective_subscription(user_id: int) -> UserSubscription | None:
    """As `queries.effective_subscription`: the newest subscription that grants access now."""
    return next((row for row in subscriptions(user_id) if row.status in ACCESS_STATUSES), None)


def paid_subscription(user_id: int) -> UserSubscription | None:
    """As `subscriptions.paid_subscription`: the live subscription unless it is to the $0 price (the Free plan)."""
    subscription = live_subscription(user_id)
    if subscription is None or subscription.plan.is_free:
        return None
    return subscription


def _remember(user_id: int, rows: list[UserSubscription]) -> list[UserSubscription]:
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
