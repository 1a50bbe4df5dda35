"""What each Stripe event does: one handler per event type, `HANDLERS` by type.

A handler takes the verified event and the `SyncResult` of its transaction; it writes rows, audits and queues
mail, and never commits: `webhooks.apply` records the event, runs the handler and commits both together, then
sends `subscription_changed`. Handlers are applied order-independently and cheaply: a subscription event's object is
written when the event is newer than the last one applied to that row, skipped when older, and only when two
events share a second (the order is ambiguous) or an object is missing is Stripe asked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, exists, insert, select
from sqlalchemy.orm import contains_eager

from app.extensions import db
from app.logging import get_logger
from app.models import AuditLog, StripeEvent, User, UserSubscription, utcnow
from app.services import audit, metrics
from app.services.mail import billing_url, queue_mail
from app.services.reporting import json_text
from app.services.signals import SyncResult
from app.services.stripe_gateway import id_of
from app.services.sync import (
    LOCKED_USER_OF_CUSTOMER,
    ROW_COLUMNS,
    RowState,
    SubscriptionRow,
    UserRef,
    apply_billing_contact,
    apply_subscription,
    customer_id_of,
    execute_values,
    find_user_for_customer,
    link_customer,
    row_state,
    sync_customer_in_transaction,
    sync_user_rows,
)
from app.templating import date, money

log = get_logger(__name__)

#: The event that brings a new subscription's row when the endpoint takes it (stripe_admin.EXTRA_EVENTS).
SUBSCRIPTION_CREATED = "customer.subscription.created"


def users_table() -> Table:
    """The table of `User` (a Core statement on it returns values, not entities)."""
    return cast(Table, User.__table__)


def event_user(event: dict[str, Any], result: SyncResult) -> User | None:
    """The (locked) user the event's object belongs to, noted on the result; None, logged, for a stranger."""
    customer_id = customer_id_of(event["data"]["object"])
    user = find_user_for_customer(customer_id) if customer_id else None
    if user is None:
        log.warning("stripe_webhook_unknown_customer", event_id=event["id"], customer=customer_id)
        return None
    result.user_id = user.id
    return user


def event_user_id(event: dict[str, Any], result: SyncResult) -> int | None:
    """The id of the event's (locked) user, noted on the result; None, logged, for a stranger. For a handler that
    needs only the id: a linked customer's user is read as a row, not loaded into the session (`event_user`, which
    links an unlinked customer, does the rest)."""
    customer_id = customer_id_of(event["data"]["object"])
    user_id = execute_values(LOCKED_USER_ID_OF_CUSTOMER, {"customer_id": customer_id}).scalar() if customer_id else None
    if user_id is None:
        user = event_user(event, result)
        return user.id if user is not None else None
    result.user_id = user_id
    return cast(int, user_id)


#: The id of the user linked to a Stripe customer (`customer_id`), its row locked as `LOCKED_USER_OF_CUSTOMER`
#: locks it: on the table, so that the answer is a plain value and nothing is loaded into the session.
LOCKED_USER_ID_OF_CUSTOMER = (
    select(users_table().c.id)
    .where(users_table().c.stripe_customer_id == bindparam("customer_id", type_=String()))
    .with_for_update()
)


def subscriptions_table() -> Table:
    """The table of `UserSubscription` (a Core statement on it returns values, not entities)."""
    return cast(Table, UserSubscription.__table__)


def locked_user_and_row(customer_id: str, subscription_id: str) -> tuple[UserRef, RowState] | None:
    """The customer's user and our row of the subscription, both locked, in one query, as values (nothing loaded
    into the session); None when either is missing (a subscription we do not have yet, a customer not linked yet):
    the caller then looks them up one by one.

    The row's plan comes from the cached catalog, so neither the row's snapshot nor the event's price (the same
    plan, unless the plan changed) costs a query. Both rows are locked, so after waiting for another transaction's
    lock the query sees their newest versions, like separate queries after the user's lock would.
    """
    found = execute_values(USER_AND_ROW, {"customer_id": customer_id, "subscription_id": subscription_id}).first()
    return (UserRef(found.owner_id, found.owner_email), row_state(found)) if found is not None else None


#: `locked_user_and_row`'s query, built once: SQLAlchemy then keeps its cache key along with its compiled form.
USER_AND_ROW = (
    select(
        users_table().c.id.label("owner_id"),
        users_table().c.email.label("owner_email"),
        *(subscriptions_table().c[name] for name in ROW_COLUMNS),
    )
    .select_from(
        users_table().join(
            subscriptions_table(),
            subscriptions_table().c.stripe_subscription_id == bindparam("subscription_id", type_=String()),
        )
    )
    .where(users_table().c.stripe_customer_id == bindparam("customer_id", type_=String()))
    .with_for_update(of=[users_table(), subscriptions_table()])
)


def locked_user_ref(customer_id: str) -> UserRef | None:
    """The user linked to a Stripe customer, locked, as values; None for a customer not linked (yet)."""
    found = execute_values(LOCKED_USER_REF_OF_CUSTOMER, {"customer_id": customer_id}).first()
    return UserRef(found.id, found.email) if found is not None else None


#: `locked_user_ref`'s query: the user's id and login email, its row locked as `LOCKED_USER_OF_CUSTOMER` locks it.
LOCKED_USER_REF_OF_CUSTOMER = (
    select(users_table().c.id, users_table().c.email)
    .where(users_table().c.stripe_customer_id == bindparam("customer_id", type_=String()))
    .with_for_update()
)


def locked_row_state(subscription_id: str) -> RowState | None:
    """Our row of a Stripe subscription, locked, as committed now, as values (`sync.locked_row` as values)."""
    found = db.session.execute(LOCKED_ROW_OF_SUBSCRIPTION, {"subscription_id": subscription_id}).first()
    return row_state(found) if found is not None else None


#: `locked_row_state`'s query, built once.
LOCKED_ROW_OF_SUBSCRIPTION = (
    select(*(subscriptions_table().c[name] for name in ROW_COLUMNS))
    .where(subscriptions_table().c.stripe_subscription_id == bindparam("subscription_id", type_=String()))
    .with_for_update()
)


def locked_user_and_rows(customer_id: str) -> tuple[User, dict[str, SubscriptionRow]] | None:
    """The customer's user and all its rows (with their plans), locked, by Stripe id, in one query; None when the
    user has no row (or is not linked): the caller then looks the user up alone.

    Locking the rows too (not only the user) makes a query that waited for another transaction's lock return
    their newest versions; a row inserted meanwhile is not among them, and `sync_user_rows` finds it when it
    tries to insert it."""
    found = db.session.execute(USER_AND_ROWS, {"customer_id": customer_id}).all()
    if not found:
        return None
    return found[0][0], {row.stripe_subscription_id: row for _, row in found}


#: `locked_user_and_rows`'s query, built once: SQLAlchemy then keeps its cache key along with its compiled form.
USER_AND_ROWS = (
    select(User, UserSubscription)
    .select_from(User)
    .join(UserSubscription, UserSubscription.user_id == User.id)
    .join(UserSubscription.plan)
    .options(contains_eager(UserSubscription.plan))
    .where(User.stripe_customer_id == bindparam("customer_id"))
    .with_for_update(of=[User, UserSubscription])
    .execution_options(populate_existing=True)
)


def user_and_row(event: dict[str, Any], result: SyncResult, customer_id: str) -> tuple[UserRef, RowState | None] | None:
    """The locked user of a subscription event and our locked row of its subscription (None for a new one), as
    values; None, logged, for a stranger. One query when both exist. A created event's row is usually not there
    yet: its user alone is read, and the row is not looked for at all — `apply_subscription` inserts it unless it
    is there. A customer not linked yet goes through `event_user`, which links it."""
    sub = event["data"]["object"]
    if event["type"] == SUBSCRIPTION_CREATED:
        user = locked_user_ref(customer_id)
        if user is not None:
            result.user_id = user.id
            return user, None
    else:
        found = locked_user_and_row(customer_id, sub["id"])
        if found is not None:
            result.user_id = found[0].id
            return found
    entity = event_user(event, result)
    if entity is None:
        return None
    return UserRef(entity.id, entity.email), locked_row_state(sub["id"])


def on_subscription_event(event: dict[str, Any], result: SyncResult) -> None:
    """customer.subscription.created/updated/deleted: apply the object if newer than what the row holds."""
    sub = event["data"]["object"]
    customer_id = customer_id_of(sub)
    if customer_id is None:  # the user is found by the customer: no customer, no user
        event_user(event, result)
        return
    found = user_and_row(event, result, customer_id)
    if found is None:
        return
    user, row = found
    event_at = int(event.get("created") or 0)
    if row is None:
        if apply_subscription(user, sub, None, result, event_at=event_at) is not None:
            return
        row = locked_row_state(sub["id"])  # inserted by another transaction meanwhile (or a price we do not sell)
        if row is None:
            return
    if row.user_id != user.id:
        raise ValueError(f"subscription {sub['id']} belongs to another user")
    if row.last_event_at is None or event_at > row.last_event_at:
        apply_subscription(user, sub, row, result, event_at=event_at)
    elif event_at == row.last_event_at:
        # Two events in the same second: their order is unknown, so ask Stripe for the current state.
        sync_customer_in_transaction(customer_id, result, user=user)
    else:
        log.info("stripe_webhook_stale_event_skipped", event_id=event["id"], subscription=sub["id"])


def on_checkout_completed(event: dict[str, Any], result: SyncResult) -> None:
    """checkout.session.completed / async_payment_succeeded: link the customer to our user, then sync if needed."""
    session = event["data"]["object"]
    customer_id = customer_id_of(session)
    reference = session.get("client_reference_id")
    metadata_user = (session.get("metadata") or {}).get("user_id")
    if reference and metadata_user and str(reference) != str(metadata_user):
        log.warning("stripe_checkout_reference_mismatch", event_id=event["id"], session=session.get("id"))
        audit.record("checkout.refused", None, session=session.get("id"), reason="reference_mismatch")
        return
    user_id = reference or metadata_user
    if not customer_id or not user_id:
        log.warning("stripe_checkout_without_user", event_id=event["id"], session=session.get("id"))
        return
    # The linked user's id only (a row, not an entity); an unlinked customer is linked to the session's user.
    linked = None
    owner_id = db.session.scalar(LOCKED_USER_ID_OF_CUSTOMER, {"customer_id": customer_id})
    if owner_id is None:
        linked = link_customer({"id": customer_id}, user_id)
        owner_id = linked.id if linked is not None else None
    if owner_id is None or str(owner_id) != str(user_id):
        log.warning("stripe_checkout_customer_mismatch", event_id=event["id"], session=session.get("id"))
        audit.record("checkout.refused", None, session=session.get("id"), reason="customer_mismatch")
        return
    result.user_id = owner_id
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return  # an async payment: the async_payment_succeeded event comes later
    # Once per session: the operator's replay (`flask stripe replay-events --since`) applies the event again.
    if audit_once(owner_id, "checkout.completed", "session", {"session": session.get("id")}):
        metrics.BILLING_CHECKOUT_SESSIONS_COMPLETED.inc()
    subscription_id = id_of(session.get("subscription"))
    if subscription_id is None or subscription_read_back_needed(subscription_id):
        # The user is locked already: the sync loads it (one query) unless linking just did.
        sync_customer_in_transaction(customer_id, result, user=linked)


def subscription_read_back_needed(subscription_id: str) -> bool:
    """Whether a completed Checkout must read its subscription from Stripe: only when our row of it is missing and
    its `customer.subscription.created` event will not bring it.

    That event will bring it when this endpoint receives created events (one has been recorded) and this
    subscription's has not been recorded yet: it is on its way (Stripe does not keep order, and retries it until it
    is applied), or being applied now, waiting for the user's lock this transaction holds. An endpoint registered
    for the six events only, or a created event already applied without making the row (its customer was not
    linked yet), needs the read-back. One query answers all three; the success page syncs on its own meanwhile.
    """
    facts = read_back_facts(db.engine.dialect.name)
    known, created_received, its_created_recorded = db.session.execute(
        facts, {"subscription_id": subscription_id}
    ).one()
    return not known and (not created_received or its_created_recorded)


@functools.cache
def read_back_facts(dialect: str) -> Any:
    """`subscription_read_back_needed`'s query: whether the row is there, whether any created event was recorded,
    whether this subscription's was. Built once per database dialect (the JSON path is written per dialect), so
    that SQLAlchemy keeps its cache key along with its compiled form."""
    subscription_id = bindparam("subscription_id", type_=String())
    object_id = json_text(StripeEvent.payload, "data", "object", "id")
    created = select(StripeEvent.id).where(StripeEvent.type == SUBSCRIPTION_CREATED)
    return select(
        exists().where(UserSubscription.stripe_subscription_id == subscription_id),
        exists(created),
        exists(created.where(StripeEvent.type.like("customer.%"), object_id == subscription_id)),
    )


def on_checkout_payment_failed(event: dict[str, Any], result: SyncResult) -> None:
    """checkout.session.async_payment_failed: audit it; nothing was bought, so nothing else changes."""
    session = event["data"]["object"]
    customer_id = customer_id_of(session)
    user = find_user_for_customer(customer_id) if customer_id else None
    if user is not None:
        audit_once(user.id, "checkout.payment_failed", "session", {"session": session.get("id")})
    else:
        audit.record("checkout.payment_failed", None, session=session.get("id"))
    log.info("payment_failed", session=session.get("id"), user_id=user.id if user else None)


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """Pinned API shape: the subscription is under parent.subscription_details."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return id_of(details.get("subscription"))


#: The user holding a Stripe subscription (`subscription_id`), as a value.
SUBSCRIPTION_OWNER = select(subscriptions_table().c.user_id).where(
    subscriptions_table().c.stripe_subscription_id == bindparam("subscription_id", type_=String())
)
#: `LOCKED_USER_ID_OF_CUSTOMER` and, in the same statement, the user holding the invoice's subscription (NULL for
#: one we do not hold): an invoice event's user and its check (`refuse_another_users_subscription`) in one round trip.
LOCKED_USER_ID_AND_SUBSCRIPTION_OWNER = LOCKED_USER_ID_OF_CUSTOMER.add_columns(SUBSCRIPTION_OWNER.scalar_subquery())


def refuse_another_users_subscription(invoice: dict[str, Any], user_id: int, owner: Any = ...) -> None:
    """An invoice of one customer naming a subscription we hold for another user contradicts our data, as a
    subscription event carrying another user's customer does (`on_subscription_event`): a ValueError, so the event is
    answered 422, kept failed and replayable once the mapping is repaired — never audited or mailed to the wrong user.
    `owner`: the subscription's user when already read (None: one we do not hold); read here otherwise."""
    subscription_id = invoice_subscription_id(invoice)
    if not subscription_id:
        return
    if owner is ...:
        owner = execute_values(SUBSCRIPTION_OWNER, {"subscription_id": subscription_id}).scalar()
    if owner is not None and owner != user_id:
        raise ValueError(f"subscription {subscription_id} belongs to another user")


def audit_once(user_id: int, action: str, key: str, details: dict[str, Any]) -> bool:
    """Add the audit entry `action` with `details` unless the user's trail holds one with the same `details[key]`
    (a payment counted once, however often its events come); whether it was added.

    One statement, INSERT … SELECT … WHERE NOT EXISTS; the caller holds the user's lock, so two deliveries of
    one payment cannot both add it."""
    values = {
        "user_id": user_id,
        "action": action,
        "details": details,
        "created_at": utcnow(),
        "key": str(details[key]),
    }
    return execute_values(audit_once_statement(key), values).first() is not None


@functools.cache
def audit_once_statement(key: str) -> Any:
    """`audit_once`'s statement for entries told apart by `details[key]`, built once per key (SQLAlchemy then keeps
    its cache key along with its compiled form)."""
    fresh = select(
        bindparam("user_id", type_=AuditLog.user_id.type),
        bindparam("action", type_=AuditLog.action.type),
        bindparam("details", type_=AuditLog.details.type),
        bindparam("created_at", type_=AuditLog.created_at.type),
    ).where(
        ~exists().where(
            AuditLog.user_id == bindparam("user_id"),
            AuditLog.action == bindparam("action"),
            AuditLog.details[key].as_string() == bindparam("key", type_=String()),
        )
    )
    columns = ["user_id", "action", "details", "created_at"]
    # The table, not the entity: parameters given to an ORM insert would make it a bulk insert of those values.
    table = cast(Table, AuditLog.__table__)
    return insert(table).from_select(columns, fresh).returning(table.c.id)


def on_invoice_paid(event: dict[str, Any], result: SyncResult) -> None:
    """invoice.paid and invoice.payment_succeeded describe the same payment: audit and count it once."""
    invoice = event["data"]["object"]
    customer_id = customer_id_of(invoice)
    params = {"customer_id": customer_id, "subscription_id": invoice_subscription_id(invoice)}
    row = execute_values(LOCKED_USER_ID_AND_SUBSCRIPTION_OWNER, params).first() if customer_id else None
    if row is not None:  # a linked customer: its user and the subscription's in one statement
        user_id, owner = row
        result.user_id = user_id
        refuse_another_users_subscription(invoice, user_id, owner)
    else:
        user_id = event_user_id(event, result)  # links a customer not linked yet
        if user_id is None:
            return
        refuse_another_users_subscription(invoice, user_id)
    details = {
        "invoice": invoice["id"],
        "amount": invoice.get("amount_paid"),
        "currency": invoice.get("currency"),
        "subscription": invoice_subscription_id(invoice),
    }
    if not audit_once(user_id, "payment.succeeded", "invoice", details):
        return
    metrics.BILLING_PAYMENTS_SUCCEEDED.inc()
    log.info("payment_succeeded", user_id=user_id, invoice=invoice["id"], amount=invoice.get("amount_paid"))


def on_invoice_payment_failed(event: dict[str, Any], result: SyncResult) -> None:
    """A failed charge: audit it, bring the subscription to past_due from Stripe, send the dunning mail once.

    The mail says what Stripe will really do, from the subscription it has just synced: "we will try again, you
    keep your plan" only while a retry is scheduled and the plan still grants access; once the retries are over a
    subscription Stripe keeps (`unpaid`, or `past_due` with no retry) gets a last mail saying so, and one Stripe has
    ended gets none of its own: its plan-ended mail says why. (A late event of an earlier attempt, processed after
    the end, sends nothing either.)
    """
    invoice = event["data"]["object"]
    customer_id = customer_id_of(invoice)
    if customer_id is None:  # the user is found by the customer: no customer, no user
        event_user(event, result)
        return
    found = locked_user_and_rows(customer_id)
    user, rows = found if found is not None else (event_user(event, result), None)
    if user is None:
        return
    result.user_id = user.id
    if not (rows and invoice_subscription_id(invoice) in rows):
        refuse_another_users_subscription(invoice, user.id)
    attempt = str(invoice.get("attempt_count") or 0)
    details = {
        "invoice": invoice["id"],
        "attempt_key": f"{invoice['id']}:{attempt}",
        "amount": invoice.get("amount_due"),
        "subscription": invoice_subscription_id(invoice),
    }
    if audit_once(user.id, "payment.failed", "attempt_key", details):
        metrics.BILLING_PAYMENTS_FAILED.inc()
        log.info("payment_failed", user_id=user.id, invoice=invoice["id"], attempt=attempt)
    # Failures are rare: one Stripe read gives the subscription's true status (past_due, or ended).
    rows = sync_user_rows(user, customer_id, result, rows)
    next_attempt = invoice.get("next_payment_attempt")
    if not next_attempt and invoice.get("status") != "open":
        return  # nothing left to pay
    subscription = invoice_subscription_row(user, invoice, rows)
    if subscription is not None and subscription.status in ("canceled", "incomplete_expired"):
        return
    retrying = bool(next_attempt) and invoice.get("status") == "open"
    queue_mail(
        "payment_failed",
        f"{invoice['id']}:{attempt}",
        user,
        plan=subscription.plan.display_name if subscription else None,  # the mail then names no plan
        amount=money(invoice.get("amount_due") or 0, cents=True),
        retrying=retrying,
        has_access=subscription.grants_access if subscription else None,  # None: a subscription we do not know
        next_attempt=(date(datetime.fromtimestamp(next_attempt, tz=UTC)) if retrying else None),
        billing_url=billing_url(),
    )
    result.mail_queued = True


def invoice_subscription_row(
    user: User, invoice: dict[str, Any], rows: dict[str, SubscriptionRow] | None = None
) -> SubscriptionRow | None:
    """Our copy of the invoice's subscription (the user's newest, for an invoice that names none); taken from
    `rows` (the user's rows by Stripe id, just synced) when it is there."""
    subscription_id = invoice_subscription_id(invoice)
    if subscription_id and rows and subscription_id in rows:
        return rows[subscription_id]
    query = select(UserSubscription).where(UserSubscription.user_id == user.id)
    if subscription_id:
        query = query.where(UserSubscription.stripe_subscription_id == subscription_id)
    return db.session.scalar(query.order_by(UserSubscription.created_at.desc()).limit(1))


def on_customer_updated(event: dict[str, Any], result: SyncResult) -> None:
    """Keep the user's billing contact (the customer's email and name) in step with Stripe, newest event wins.

    The login email is never touched: the Portal and the Dashboard set any address, unverified, so a customer
    could otherwise take another person's login. Changing the login email is the account page's verified flow.
    """
    customer = event["data"]["object"]
    user = db.session.scalar(LOCKED_USER_OF_CUSTOMER, {"customer_id": customer["id"]})
    if user is None:
        return
    result.user_id = user.id
    event_at = int(event.get("created") or 0)
    if user.customer_event_at is not None and event_at < user.customer_event_at:
        return
    user.customer_event_at = event_at
    if payment_method_changed(event):
        audit.record("payment_method.updated", user.id, customer=customer["id"])
        metrics.BILLING_PAYMENT_METHOD_UPDATES.inc()
        log.info("payment_method_updated", user_id=user.id)
    if "email" in apply_billing_contact(user, customer):
        audit.record("customer.email_changed", user.id, customer=customer["id"], source="stripe")


def payment_method_changed(event: dict[str, Any]) -> bool:
    """True when previous_attributes show the default payment method replaced by another (the first card, set by
    Checkout, is not an update)."""
    previous = (event["data"].get("previous_attributes") or {}).get("invoice_settings")
    if not isinstance(previous, dict) or not previous.get("default_payment_method"):
        return False
    current = (event["data"]["object"].get("invoice_settings") or {}).get("default_payment_method")
    return id_of(previous["default_payment_method"]) != id_of(current)


Handler = Callable[[dict[str, Any], SyncResult], None]


def carrying(kind: str, handler: Handler) -> Handler:
    """`handler`, run only on an event whose `data.object` is a Stripe `kind` with an id: anything else is a shape it
    was not written for — answered 422 `unprocessable_event` and kept failed (a ValueError), never applied as
    "processed" after finding nothing in it (a signed `customer.subscription.updated` carrying `{"weird": 1}` was)."""

    @functools.wraps(handler)
    def checked(event: dict[str, Any], result: SyncResult) -> None:
        obj = event["data"]["object"]
        if not isinstance(obj, dict) or obj.get("object") != kind or not isinstance(obj.get("id"), str):
            found = obj.get("object") if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{event['type']} carries {found!r}, not a {kind} with an id")
        handler(event, result)

    return checked


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": carrying("checkout.session", on_checkout_completed),
    "checkout.session.async_payment_succeeded": carrying("checkout.session", on_checkout_completed),
    "checkout.session.async_payment_failed": carrying("checkout.session", on_checkout_payment_failed),
    "customer.subscription.created": carrying("subscription", on_subscription_event),
    "customer.subscription.updated": carrying("subscription", on_subscription_event),
    "customer.subscription.deleted": carrying("subscription", on_subscription_event),
    "invoice.paid": carrying("invoice", on_invoice_paid),
    "invoice.payment_succeeded": carrying("invoice", on_invoice_paid),
    "invoice.payment_failed": carrying("invoice", on_invoice_payment_failed),
    "customer.updated": carrying("customer", on_customer_updated),
}
