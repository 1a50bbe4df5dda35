"""Stripe webhooks: verify → record → dispatch, in one transaction, exactly once, in any order.

- Verified from the raw body against every configured secret (rotation sends one `v1=` per secret).
- Recorded in `stripe_events` (the id is the primary key) and locked: of two concurrent deliveries of one
  event, the second waits for the first and then answers "duplicate".
- Applied order-independently and cheaply: a subscription event's object is written when the event is newer
  than the last one applied to that row, skipped when older, and only when two events share a second (the order
  is ambiguous) or an object is missing is Stripe asked (`sync_customer`).
- A handler fault rolls everything back, keeps the row's error and attempt count, and answers 500 so that
  Stripe retries. Redis `webhook_processed:<id>` (7 days) is a fast path for duplicates; the table is the truth.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import DataError, ProgrammingError
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import cache_redis, db
from app.logging import get_logger
from app.models import AuditLog, StripeEvent, User, UserSubscription, utcnow
from app.services import audit, metrics
from app.services.mail import billing_url, queue_mail
from app.services.stripe_gateway import SignatureInvalid, gateway
from app.services.signals import SyncResult, commit_billing
from app.services.sync import (
    apply_subscription,
    customer_id_of,
    find_user_for_customer,
    link_customer,
    sync_customer_in_transaction,
)
from app.templating import money

log = get_logger(__name__)

PROCESSED_KEY = "webhook_processed:{}"
PROCESSED_TTL = 7 * 24 * 3600
TOLERANCE_SECONDS = 300
#: The six events the deployment guide registers (the handlers below also take the others Stripe may send).
GUIDE_EVENTS = metrics.WEBHOOK_EVENT_TYPES


class WebhookRejected(Exception):
    """The delivery is refused before anything is recorded (4xx/5xx without side effects)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Outcome:
    status: str  # processed | ignored | duplicate
    event_id: str
    event_type: str


def configured_secrets() -> list[str]:
    raw = current_app.config.get("STRIPE_WEBHOOK_SECRET") or ""
    return [s.strip() for s in raw.split(",") if s.strip()]


def verify(payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event from the raw body if its signature matches one of our secrets within 5 minutes."""
    secrets = configured_secrets()
    if not secrets:
        log.error("stripe_webhook_secret_missing", reason="STRIPE_WEBHOOK_SECRET is not set: refusing every delivery")
        raise WebhookRejected(500, "webhook_not_configured", "Webhook signing secret is not configured.")
    if not signature:
        log.warning("stripe_webhook_invalid_signature", reason="missing Stripe-Signature header")
        raise WebhookRejected(400, "invalid_signature", "Missing Stripe-Signature header.")
    for secret in secrets:
        try:
            gateway().verify_webhook(payload, signature, secret, tolerance=TOLERANCE_SECONDS)
        except SignatureInvalid:
            continue
        except ValueError:  # the signature matched but the body is not JSON
            log.warning("stripe_webhook_invalid_payload")
            raise WebhookRejected(400, "invalid_payload", "The body is not a JSON event.")
        break
    else:
        log.warning("stripe_webhook_invalid_signature", reason="no configured secret matches, or too old")
        metrics.record_webhook("unknown", "invalid_signature")
        raise WebhookRejected(400, "invalid_signature", "Invalid signature.")
    try:
        event = json.loads(payload)
    except ValueError:
        raise WebhookRejected(400, "invalid_payload", "The body is not a JSON event.")
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str) \
            or not isinstance((event.get("data") or {}).get("object"), dict) \
            or not isinstance(event["data"]["object"].get("id", ""), str):
        raise WebhookRejected(400, "invalid_payload", "The body is not a Stripe event.")
    log.info("stripe_webhook_verified", event_id=event["id"], event_type=event["type"])
    return event


# --- the fast path ------------------------------------------------------------------------------------------------

def seen_in_redis(event_id: str) -> bool:
    client = cache_redis()
    if client is None:
        return False
    try:
        return bool(client.exists(PROCESSED_KEY.format(event_id)))
    except Exception:  # Redis down: the database decides
        return False


def remember_in_redis(event_id: str) -> None:
    client = cache_redis()
    if client is None:
        return
    try:
        client.set(PROCESSED_KEY.format(event_id), "1", ex=PROCESSED_TTL)
    except Exception:
        log.warning("webhook_redis_unavailable", event_id=event_id)


# --- record, then act -----------------------------------------------------------------------------------------------

DONE = ("processed", "ignored")
#: What a handler raises when a signed event cannot be applied as it is — a shape it does not expect (a key missing,
#: a value of another type) or data that contradicts ours (a subscription of another user): answered 422
#: `unprocessable_event`, not 500 (kept for our own faults: the database down, a bug). The event is kept as failed
#: either way, and Stripe retries both, so a fix — or the operator's replay — applies it.
#: (A value of the wrong type reaching a query is refused by PostgreSQL as a ProgrammingError or DataError.)
MALFORMED = (KeyError, TypeError, AttributeError, ValueError, IndexError, ProgrammingError, DataError)


def record(event: dict[str, Any]) -> tuple[str, int]:
    """Record the event, or lock its existing row: (status, attempts) before this delivery, row locked until commit.

    A new event costs one round trip: the insert both records it and holds its lock, so a concurrent delivery of
    the same event waits on the unique key and then finds it processed.
    """
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    inserted = db.session.execute(
        dialect.insert(StripeEvent).values(
            id=event["id"], type=event["type"], livemode=bool(event.get("livemode")),
            stripe_created=datetime.fromtimestamp(int(event.get("created") or 0), tz=timezone.utc),
            received_at=utcnow(), status="received", attempts=0, payload=event,
        ).on_conflict_do_nothing(index_elements=["id"]).returning(StripeEvent.id)
    ).first()
    if inserted is not None:
        return "received", 0
    status, attempts = db.session.execute(
        select(StripeEvent.status, StripeEvent.attempts).where(StripeEvent.id == event["id"]).with_for_update()
    ).one()
    return status, attempts


def mark(event_id: str, **values: Any) -> None:
    db.session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(**values))


def apply(event: dict[str, Any], attempts: int) -> str:
    """Run the event's handler and mark its row, then commit and send `subscription_changed`.

    On any fault: roll back everything the handler did, keep the error and attempt count, and re-raise. (A
    receiver's fault comes after the commit: the event stays processed, and the rollback has nothing to undo.)
    """
    handler = HANDLERS.get(event["type"])
    result = SyncResult(None)
    try:
        if handler is not None:
            handler(event, result)
        status = "processed" if handler is not None else "ignored"
        mark(event["id"], status=status, attempts=attempts, processed_at=utcnow(), error=None)
        commit_billing(result)
    except Exception as error:
        db.session.rollback()
        record_failure(event, attempts, error)
        raise
    return status


def record_failure(event: dict[str, Any], attempts: int, error: Exception) -> None:
    """Keep the failed delivery's error and attempt count (in a transaction of its own)."""
    try:
        status, _ = record(event)
        if status not in DONE:
            mark(event["id"], status="failed", attempts=attempts, error=f"{type(error).__name__}: {error}"[:2000])
        db.session.commit()
    except Exception:  # the database itself may be what failed: Stripe's retry will record it
        db.session.rollback()


def handle(payload: bytes, signature: str | None) -> Outcome:
    """The whole endpoint minus HTTP: verify, record, dispatch, commit, then `subscription_changed`."""
    started = time.perf_counter()
    event = verify(payload, signature)
    event_id, event_type = event["id"], event["type"]
    if seen_in_redis(event_id):
        metrics.record_webhook(metric_type(event_type), "duplicate")
        return Outcome("duplicate", event_id, event_type)

    try:
        status, attempts = record(event)
    except DataError:  # e.g. a \u0000 that PostgreSQL text cannot hold, an id longer than Stripe's
        db.session.rollback()
        log.warning("stripe_webhook_invalid_payload", event_id=event_id[:255], reason="the database cannot store it")
        raise WebhookRejected(400, "invalid_payload", "The event holds values that cannot be stored.")
    if status in DONE:
        db.session.commit()
        remember_in_redis(event_id)
        metrics.record_webhook(metric_type(event_type), "duplicate")
        log.info("stripe_webhook_duplicate", event_id=event_id, event_type=event_type)
        return Outcome("duplicate", event_id, event_type)
    try:
        outcome = apply(event, attempts + 1)
    except Exception as error:
        metrics.record_webhook(metric_type(event_type), "failed", time.perf_counter() - started)
        log.error("stripe_webhook_handling_failed", event_id=event_id, event_type=event_type, attempts=attempts + 1,
                  error=f"{type(error).__name__}: {error}")
        if isinstance(error, MALFORMED):
            raise WebhookRejected(422, "unprocessable_event", f"This {event_type} event cannot be applied as it is "
                                  f"({type(error).__name__}); it is kept as failed, to replay after a fix.") from error
        raise
    remember_in_redis(event_id)
    seconds = time.perf_counter() - started
    metrics.record_webhook(metric_type(event_type), outcome, seconds)
    log.info("stripe_webhook_handled_successfully", event_id=event_id, event_type=event_type, outcome=outcome,
             duration_ms=round(seconds * 1000, 1))
    return Outcome(outcome, event_id, event_type)


def metric_type(event_type: str) -> str:
    """Label values stay bounded: unknown types are counted together."""
    return event_type if event_type in HANDLERS else "other"


def reprocess(event_id: str) -> Outcome:
    """Run a recorded event's handler again (the operator's replay), whatever its status."""
    row = db.session.execute(
        select(StripeEvent.payload, StripeEvent.attempts).where(StripeEvent.id == event_id).with_for_update()
    ).first()
    if row is None:
        raise LookupError(event_id)
    event, attempts = row
    return Outcome(apply(event, attempts + 1), event_id, event["type"])


# --- handlers -------------------------------------------------------------------------------------------------------

def event_user(event: dict[str, Any], result: SyncResult) -> User | None:
    """The (locked) user the event's object belongs to, noted on the result; None, logged, for a stranger."""
    customer_id = customer_id_of(event["data"]["object"])
    user = find_user_for_customer(customer_id) if customer_id else None
    if user is None:
        log.warning("stripe_webhook_unknown_customer", event_id=event["id"], customer=customer_id)
        return None
    result.user_id = user.id
    return user


def on_subscription_event(event: dict[str, Any], result: SyncResult) -> None:
    """customer.subscription.created/updated/deleted: apply the object if newer than what the row holds."""
    sub = event["data"]["object"]
    customer_id = customer_id_of(sub)
    user = event_user(event, result)
    if user is None:
        return
    event_at = int(event.get("created") or 0)
    row = db.session.scalar(select(UserSubscription).where(UserSubscription.stripe_subscription_id == sub["id"])
                            .with_for_update().execution_options(populate_existing=True))
    if row is not None and row.user_id != user.id:
        raise ValueError(f"subscription {sub['id']} belongs to another user")
    if row is None or row.last_event_at is None or event_at > row.last_event_at:
        apply_subscription(user, sub, row, result, event_at=event_at)
    elif event_at == row.last_event_at:
        # Two events in the same second: their order is unknown, so ask Stripe for the current state.
        sync_customer_in_transaction(customer_id, result)
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
    user = db.session.scalar(select(User).where(User.stripe_customer_id == customer_id).with_for_update())
    if user is None:
        user = link_customer({"id": customer_id}, user_id)
    if user is None or str(user.id) != str(user_id):
        log.warning("stripe_checkout_customer_mismatch", event_id=event["id"], session=session.get("id"))
        audit.record("checkout.refused", None, session=session.get("id"), reason="customer_mismatch")
        return
    result.user_id = user.id
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return  # an async payment: the async_payment_succeeded event comes later
    metrics.BILLING_CHECKOUT_SESSIONS_COMPLETED.inc()
    audit.record("checkout.completed", user.id, session=session.get("id"))
    subscription_id = session.get("subscription")
    if isinstance(subscription_id, dict):
        subscription_id = subscription_id.get("id")
    known = subscription_id and db.session.scalar(
        select(UserSubscription.id).where(UserSubscription.stripe_subscription_id == subscription_id))
    if not known:  # the subscription's own event may still be on its way: fetch it so access starts now
        sync_customer_in_transaction(customer_id, result)


def on_checkout_payment_failed(event: dict[str, Any], result: SyncResult) -> None:
    session = event["data"]["object"]
    user = find_user_for_customer(customer_id_of(session)) if customer_id_of(session) else None
    audit.record("checkout.payment_failed", user.id if user else None, session=session.get("id"))
    log.info("payment_failed", session=session.get("id"), user_id=user.id if user else None)


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """Pinned API shape: the subscription is under parent.subscription_details."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    sub = details.get("subscription")
    return sub.get("id") if isinstance(sub, dict) else sub


def already_audited(user_id: int, action: str, key: str, value: str) -> bool:
    return db.session.scalar(
        select(AuditLog.id).where(AuditLog.user_id == user_id, AuditLog.action == action,
                                        AuditLog.details[key].as_string() == value).limit(1)
    ) is not None


def on_invoice_paid(event: dict[str, Any], result: SyncResult) -> None:
    """invoice.paid and invoice.payment_succeeded describe the same payment: audit and count it once."""
    invoice = event["data"]["object"]
    user = event_user(event, result)
    if user is None:
        return
    if already_audited(user.id, "payment.succeeded", "invoice", invoice["id"]):
        return
    audit.record("payment.succeeded", user.id, invoice=invoice["id"], amount=invoice.get("amount_paid"),
                 currency=invoice.get("currency"), subscription=invoice_subscription_id(invoice))
    metrics.BILLING_PAYMENTS_SUCCEEDED.inc()
    log.info("payment_succeeded", user_id=user.id, invoice=invoice["id"], amount=invoice.get("amount_paid"))


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
    user = event_user(event, result)
    if user is None:
        return
    attempt = str(invoice.get("attempt_count") or 0)
    if not already_audited(user.id, "payment.failed", "attempt_key", f"{invoice['id']}:{attempt}"):
        audit.record("payment.failed", user.id, invoice=invoice["id"], attempt_key=f"{invoice['id']}:{attempt}",
                     amount=invoice.get("amount_due"), subscription=invoice_subscription_id(invoice))
        metrics.BILLING_PAYMENTS_FAILED.inc()
        log.info("payment_failed", user_id=user.id, invoice=invoice["id"], attempt=attempt)
    # Failures are rare: one Stripe read gives the subscription's true status (past_due, or ended).
    sync_customer_in_transaction(customer_id, result)
    next_attempt = invoice.get("next_payment_attempt")
    if not next_attempt and invoice.get("status") != "open":
        return  # nothing left to pay
    subscription = invoice_subscription_row(user, invoice)
    if subscription is not None and subscription.status in ("canceled", "incomplete_expired"):
        return
    retrying = bool(next_attempt) and invoice.get("status") == "open"
    queue_mail("payment_failed", f"{invoice['id']}:{attempt}", user,
               plan=subscription.plan.display_name if subscription else "paid",
               amount=money(invoice.get("amount_due") or 0, cents=True), retrying=retrying,
               has_access=subscription.grants_access if subscription else None,  # None: a subscription we do not know
               next_attempt=(datetime.fromtimestamp(next_attempt, tz=timezone.utc).strftime("%-d %b %Y")
                             if retrying else None),
               billing_url=billing_url())
    result.mail_queued = True


def invoice_subscription_row(user: User, invoice: dict[str, Any]) -> UserSubscription | None:
    """Our copy of the invoice's subscription (the user's newest, for an invoice that names none)."""
    subscription_id = invoice_subscription_id(invoice)
    query = select(UserSubscription).where(UserSubscription.user_id == user.id)
    if subscription_id:
        query = query.where(UserSubscription.stripe_subscription_id == subscription_id)
    return db.session.scalar(query.order_by(UserSubscription.created_at.desc()).limit(1))


def on_customer_updated(event: dict[str, Any], result: SyncResult) -> None:
    """Keep the user's email and name in step with the Stripe customer (newest event wins)."""
    customer = event["data"]["object"]
    user = db.session.scalar(select(User).where(User.stripe_customer_id == customer["id"]).with_for_update())
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
    if customer.get("name") != user.name:
        user.name = customer.get("name")
    email = (customer.get("email") or "").strip().lower()
    if email and email != user.email:
        taken = db.session.scalar(select(User.id).where(User.email == email, User.id != user.id))
        if taken:
            log.warning("stripe_customer_email_taken", user_id=user.id)
        else:
            audit.record("user.email_changed", user.id, source="stripe")
            user.email = email


def payment_method_changed(event: dict[str, Any]) -> bool:
    """True when previous_attributes show the default payment method replaced by another (the first card, set by
    Checkout, is not an update)."""
    previous = (event["data"].get("previous_attributes") or {}).get("invoice_settings")
    if not isinstance(previous, dict) or not previous.get("default_payment_method"):
        return False
    current = (event["data"]["object"].get("invoice_settings") or {}).get("default_payment_method")
    return id_of(previous["default_payment_method"]) != id_of(current)


def id_of(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


HANDLERS: dict[str, Callable[[dict[str, Any], SyncResult], None]] = {
    "checkout.session.completed": on_checkout_completed,
    "checkout.session.async_payment_succeeded": on_checkout_completed,
    "checkout.session.async_payment_failed": on_checkout_payment_failed,
    "customer.subscription.created": on_subscription_event,
    "customer.subscription.updated": on_subscription_event,
    "customer.subscription.deleted": on_subscription_event,
    "invoice.paid": on_invoice_paid,
    "invoice.payment_succeeded": on_invoice_paid,
    "invoice.payment_failed": on_invoice_payment_failed,
    "customer.updated": on_customer_updated,
}
