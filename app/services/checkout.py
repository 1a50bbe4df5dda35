"""Checkout and the Customer Portal: from a plan choice to a Stripe-hosted page, and back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.extensions import db
from app.logging import get_logger
from app.models import User
from app.services import DomainError, audit, metrics, stripe_gateway
from app.services.catalog import PlanChoice, validate_choice
from app.services.queries import live_subscription
from app.services.signals import SyncResult, commit_billing
from app.services.stripe_gateway import id_of
from app.services.subscriptions import SubscriptionError
from app.services.sync import apply_billing_contact, sync_customer, sync_customer_in_transaction
from app.urls import external_url

log = get_logger(__name__)

PORTAL_FLOWS = ("payment_method_update", "subscription_cancel", "subscription_update")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CheckoutError(DomainError):
    code = "checkout_error"


class PlanChangeRequired(DomainError):
    """The user already pays: the existing subscription is changed instead of a second Checkout."""

    code = "plan_change_required"
    status = 409


def lock_user(user_id: int) -> User:
    """The user row, locked until commit: one billing operation at a time per user."""
    user = db.session.scalar(select(User).where(User.id == user_id).with_for_update())
    if user is None:
        raise CheckoutError("There is no such account.", code="no_account", status=404)
    return user


def customer_key(user: User) -> str:
    """The idempotency key of the user's customer creation: the user's id and the microsecond its row was made.

    Stripe keeps keys per account for at least 24 hours. The id alone repeats across installs sharing a Stripe
    account (staging and development on one test key) and in a database whose ids start again: Stripe would then
    refuse the other user's request (400, keys reused with other parameters) or, for the same email, hand back the
    other install's customer. `created_at` never changes once the row exists.
    """
    created = (user.created_at - EPOCH) // timedelta(microseconds=1)
    return f"customer-create-{user.id}-{created}"


def ensure_customer(user_id: int) -> str:
    """The user's Stripe customer id, creating the customer once (idempotency key: `customer_key`).

    Stored in `users.stripe_customer_id` and committed before any redirect, so a second customer can never appear.
    """
    user = lock_user(user_id)
    if user.stripe_customer_id:
        db.session.commit()
        return user.stripe_customer_id
    customer = stripe_gateway.create_customer(user.email, {"user_id": str(user.id)}, idempotency_key=customer_key(user))
    user.stripe_customer_id = customer["id"]
    apply_billing_contact(user, customer)  # the customer starts with the login email as its billing email
    audit.record("customer.created", user.id, customer=customer["id"])
    db.session.commit()
    return customer["id"]


@dataclass
class CheckoutStart:
    session_id: str
    url: str


def start_checkout(
    user_id: int,
    plan_name: str | None,
    cycle: str | None,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> CheckoutStart:
    """A Checkout Session for a user on Free; a paying user gets PlanChangeRequired instead.

    Any other open session of the user is expired first, so two tabs cannot end in two subscriptions. Stripe sends
    the person back to `checkout_success_url()` / `checkout_cancel_url()` unless other URLs are given.
    """
    plan, cycle, price_id = validate_choice(plan_name, cycle)
    refuse_second_subscription(user_id, plan, cycle)
    user = db.session.get(User, user_id)
    had_customer = user is not None and user.stripe_customer_id is not None
    customer_id = ensure_customer(user_id)
    lock_user(user_id)  # serialise concurrent checkouts of the same user until this one is created
    if had_customer:
        # Stripe is the truth: a payment made a moment ago may not have reached our copy yet (webhook on its way,
        # success page not loaded). Read it before opening a second checkout.
        sync_result = sync_customer_in_transaction(customer_id)
        if sync_result.changed:
            commit_billing(sync_result)
            lock_user(user_id)
        refuse_second_subscription(user_id, plan, cycle)
    expire_open_sessions(customer_id)
    session = stripe_gateway.create_checkout_session(
        params={
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": str(user_id),
            "line_items": [{"price": price_id, "quantity": 1}],
            "metadata": {"user_id": str(user_id), "plan": plan.name, "billing_cycle": cycle},
            "subscription_data": {"metadata": {"user_id": str(user_id), "plan": plan.name, "billing_cycle": cycle}},
            "success_url": success_url or checkout_success_url(),
            "cancel_url": cancel_url or checkout_cancel_url(),
        },
    )
    audit.record("checkout.started", user_id, session=session["id"], plan=plan.name, billing_cycle=cycle)
    db.session.commit()
    metrics.BILLING_CHECKOUT_SESSIONS_CREATED.inc()
    return CheckoutStart(session["id"], session["url"])


def review_choice(user_id: int, plan_name: str | None, cycle: str | None) -> PlanChoice:
    """What a Free user is about to buy, before Checkout; a paying user gets PlanChangeRequired instead.

    Reads only our copy of the subscriptions: `start_checkout` asks Stripe again when the button is pressed.
    """
    plan, cycle, _ = validate_choice(plan_name, cycle)
    refuse_second_subscription(user_id, plan, cycle)
    return PlanChoice(plan, cycle)


def refuse_second_subscription(user_id: int, plan, cycle: str) -> None:
    """A user with a live subscription changes it (or is already on that plan): never a second Checkout."""
    current = live_subscription(user_id)
    if current is None:
        return
    if current.plan_id == plan.id and current.billing_cycle == cycle:
        raise SubscriptionError(f"You are already on {plan.display_name} {cycle}.", code="already_on_plan", status=409)
    raise PlanChangeRequired(
        f"You already have a subscription: confirm the change to {plan.display_name} {cycle} instead of paying twice."
    )


def expire_open_sessions(customer_id: str) -> None:
    """Expire the customer's open Checkout Sessions (an older tab can no longer be paid)."""
    for session in stripe_gateway.list_checkout_sessions(customer_id, status="open"):
        stripe_gateway.expire_checkout_session(session["id"])


@dataclass
class Fulfilment:
    session: dict[str, Any]
    sync: SyncResult | None

    @property
    def paid(self) -> bool:
        return self.session.get("status") == "complete" and self.session.get("payment_status") in (
            "paid",
            "no_payment_required",
        )


def session_belongs_to(session: dict[str, Any], user: User) -> bool:
    """A session is the user's when both our reference and the customer say so (no customer, no claim)."""
    customer = id_of(session.get("customer"))
    if session.get("client_reference_id") != str(user.id):
        return False
    return customer is None or user.stripe_customer_id in (None, customer)


def fulfil_checkout(session_id: str, user_id: int) -> Fulfilment:
    """The success page's fulfilment: retrieve the session, refuse another user's, sync the customer.

    Idempotent and safe beside the webhook doing the same: both end in `sync_customer`.
    """
    session = stripe_gateway.retrieve_checkout_session(session_id)
    user = db.session.get(User, user_id)
    if user is None or not session_belongs_to(session, user):
        raise DomainError("We could not find that checkout.", code="not_found", status=404)
    fulfilment = Fulfilment(session, None)
    if fulfilment.paid and session.get("customer"):
        fulfilment.sync = sync_customer(session["customer"])
    return fulfilment


def sync_after_portal(user_id: int) -> None:
    """Back from the Portal: read the subscription now, so a change made there shows without waiting for its
    webhook. Stripe being down is no error here: the billing page then shows the local copy."""
    user = db.session.get(User, user_id)
    if user is None or not user.stripe_customer_id:
        return
    try:
        sync_customer(user.stripe_customer_id)
    except DomainError as error:
        db.session.rollback()
        log.warning("portal_return_sync_failed", code=error.code)


def create_portal_session(user_id: int, return_url: str | None = None, flow: str | None = None) -> str:
    """A Customer Portal session URL; the user must already be a Stripe customer.

    The Portal's return link leads to `portal_return_url()` unless another URL is given.
    """
    user = db.session.get(User, user_id)
    if user is None or not user.stripe_customer_id:
        raise CheckoutError("You have no billing account yet — choose a paid plan first.", code="no_billing_account")
    params: dict[str, Any] = {"customer": user.stripe_customer_id, "return_url": return_url or portal_return_url()}
    if flow is not None:
        if flow not in PORTAL_FLOWS:
            raise CheckoutError(f"Unknown portal flow {flow!r}.", code="invalid_flow")
        params["flow_data"] = {"type": flow}
        if flow in ("subscription_cancel", "subscription_update"):
            subscription = live_subscription(user.id)
            if subscription is None:
                raise CheckoutError("You have no paid subscription.", code="no_subscription")
            params["flow_data"][flow] = {"subscription": subscription.stripe_subscription_id}
    return stripe_gateway.create_portal_session(params)["url"]


# --- where Stripe sends the person back ---------------------------------------------------------------------
# Built here, once, for the web pages and the API alike; never from anything in the request (see `external_url`).


def checkout_success_url() -> str:
    """The success page, which fulfils the session Stripe names in `{CHECKOUT_SESSION_ID}`."""
    return external_url("billing.show_success") + "?session_id={CHECKOUT_SESSION_ID}"


def checkout_cancel_url() -> str:
    """Back to the plans when the person leaves Checkout without paying."""
    return external_url("pricing.show_pricing")


def portal_return_url() -> str:
    """Where the Portal's return link leads: the billing page, which then syncs (`?from=portal`)."""
    return external_url("billing.show_billing", **{"from": "portal"})
