"""`flask stripe trigger EVENT`: the offline twin of `stripe trigger`. It makes the real objects whose change makes
Stripe send EVENT — in the bundled emulator, or in a Stripe test-mode account when STRIPE_SECRET_KEY is set — so the
real, signed event goes to every registered webhook endpoint, as `stripe trigger` does with its fixtures.

In the emulator a subscription is started through Checkout, paid with the emulator's control API (what a person does
on the hosted page); in Stripe test mode it is created directly with Stripe's test payment methods, except
`checkout.session.completed`, which needs the hosted page: its URL is printed and the event waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select

from app.extensions import db
from app.models import SubscriptionPlan
from app.services import DomainError, stripe_gateway
from app.services.stripe_gateway import id_of

GOOD_CARD, FAILING_CARD = "4242424242424242", "4000000000000341"  # the emulator's test cards
#: Stripe test mode's payment methods: one that pays, one that attaches and then declines every charge.
GOOD_TEST_PM, FAILING_TEST_PM = "pm_card_visa", "pm_card_chargeCustomerFail"


class TriggerFailed(DomainError):
    code = "trigger_failed"
    status = 502


@dataclass
class Started:
    customer_id: str
    #: What the operator must do for the event to happen (Stripe test mode's Checkout page), or None.
    action: str | None = None


def plan_price(plan_name: str) -> str:
    """The seeded plan's monthly price id (`flask seed-plans` first)."""
    price = db.session.scalar(
        select(SubscriptionPlan.stripe_price_id_monthly).where(SubscriptionPlan.name == plan_name)
    )
    if not price:
        raise TriggerFailed(f"the {plan_name} plan has no price id: run `flask seed-plans` first")
    return price


def emulator_control(path: str, data: dict[str, Any]) -> dict[str, Any]:
    """A call to the emulator's control API (`/_emulator/…`): what Stripe's hosted pages do for a person."""
    response = requests.post(f"{stripe_gateway.gateway().api_base}/_emulator/{path}", data=data, timeout=30)
    if response.status_code >= 400:
        raise TriggerFailed(f"the emulator refused {path}: {response.text[:200]}")
    return response.json()


def new_customer(card: str) -> dict[str, Any]:
    """A customer marked as made by trigger (with a default test card in Stripe test mode)."""
    params: dict[str, Any] = {
        "email": f"trigger-{int(time.time() * 1000)}@example.com",
        "name": "Trigger test",
        "metadata": {"created_by": "flask stripe trigger"},
    }
    if not stripe_gateway.gateway().is_emulator:
        pm = GOOD_TEST_PM if card == GOOD_CARD else FAILING_TEST_PM
        params.update(payment_method=pm, invoice_settings={"default_payment_method": pm})
    return stripe_gateway.create_customer_with(params)


def checkout_session(customer: dict[str, Any], price: str) -> dict[str, Any]:
    return stripe_gateway.create_checkout_session(
        {
            "mode": "subscription",
            "customer": customer["id"],
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": "https://example.com/trigger/success",
            "cancel_url": "https://example.com/trigger/cancel",
            "metadata": {"created_by": "flask stripe trigger"},
        }
    )


def paid_subscription(card: str = GOOD_CARD, plan: str = "starter") -> tuple[dict[str, Any], str]:
    """(customer, subscription id) of a new subscription whose first invoice is paid."""
    customer = new_customer(card)
    if stripe_gateway.gateway().is_emulator:
        session = checkout_session(customer, plan_price(plan))
        emulator_control(f"checkout/{session['id']}/complete", {"card": card})
        subscription = id_of(stripe_gateway.retrieve_checkout_session(session["id"])["subscription"])
    else:
        subscription = stripe_gateway.create_subscription(
            {
                "customer": customer["id"],
                "items": [{"price": plan_price(plan)}],
                "metadata": {"created_by": "flask stripe trigger"},
            }
        )["id"]
    return customer, subscription


def make_checkout_completed() -> Started:
    if stripe_gateway.gateway().is_emulator:
        customer, _ = paid_subscription()
        return Started(customer["id"])
    session = checkout_session(new_customer(GOOD_CARD), plan_price("starter"))
    return Started(id_of(session["customer"]), f"open {session['url']} and pay with 4242 4242 4242 4242")


def make_subscription_updated() -> Started:
    customer, subscription = paid_subscription()
    stripe_gateway.update_subscription(
        subscription,
        {"metadata": {"triggered": str(int(time.time()))}},
        idempotency_key=f"trigger-update-{subscription}",
    )
    return Started(customer["id"])


def make_subscription_deleted() -> Started:
    customer, subscription = paid_subscription()
    stripe_gateway.cancel_subscription(subscription)
    return Started(customer["id"])


def make_payment_failed() -> Started:
    """A card that pays once then declines (emulator: an upgrade invoiced at once fails; test mode: the first
    invoice of a subscription on a card that always declines)."""
    if not stripe_gateway.gateway().is_emulator:
        customer = new_customer(FAILING_CARD)
        stripe_gateway.create_subscription(
            {
                "customer": customer["id"],
                "items": [{"price": plan_price("starter")}],
                "payment_behavior": "allow_incomplete",
            }
        )
        return Started(customer["id"])
    customer, subscription = paid_subscription(FAILING_CARD)
    item = stripe_gateway.retrieve_subscription(subscription)["items"]["data"][0]["id"]
    stripe_gateway.update_subscription(
        subscription,
        {"items": [{"id": item, "price": plan_price("pro")}], "proration_behavior": "always_invoice"},
        idempotency_key=f"trigger-fail-{subscription}",
    )
    return Started(customer["id"])


def make_payment_succeeded() -> Started:
    customer, _ = paid_subscription()
    return Started(customer["id"])


def make_customer_updated() -> Started:
    customer = new_customer(GOOD_CARD)
    stripe_gateway.update_customer(customer["id"], {"name": "Trigger test (renamed)"})
    return Started(customer["id"])


#: What `flask stripe trigger` can make: the six events the endpoint is registered for.
MAKERS: dict[str, Callable[[], Started]] = {
    "checkout.session.completed": make_checkout_completed,
    "customer.subscription.updated": make_subscription_updated,
    "customer.subscription.deleted": make_subscription_deleted,
    "invoice.payment_failed": make_payment_failed,
    "invoice.payment_succeeded": make_payment_succeeded,
    "customer.updated": make_customer_updated,
}


def event_of(event_type: str, customer_id: str) -> dict[str, Any] | None:
    """The newest `event_type` event about the customer (its object is the customer, or names it)."""
    for event in stripe_gateway.list_events_of_type(event_type, 20):
        obj = event["data"]["object"]
        if customer_id in (obj.get("id"), id_of(obj.get("customer"))):
            return event
    return None


def start(event_type: str) -> Started:
    """Make the objects whose change makes Stripe send `event_type`."""
    if event_type not in MAKERS:
        raise TriggerFailed(f"cannot trigger {event_type}: one of {', '.join(MAKERS)}")
    return MAKERS[event_type]()


def wait_for_event(event_type: str, customer_id: str, timeout: float) -> dict[str, Any]:
    """The event, polled for until `timeout` seconds (Stripe creates events a moment after the change)."""
    deadline = time.monotonic() + timeout
    while True:
        event = event_of(event_type, customer_id)
        if event is not None:
            return event
        if time.monotonic() > deadline:
            raise TriggerFailed(f"no {event_type} event about {customer_id} after {timeout:.0f} s")
        time.sleep(0.5)
