"""A realistic billing history for the webhook benchmarks, made by the Stripe emulator (`stripe_emulator/`).

Each customer subscribes through Checkout (one in seven with card 4000 0000 0000 0341, which pays now and fails
every later charge), some change afterwards like people do in the portal (upgrade, switch to Starter, cancel at
period end, cancel then resume), then months pass: renewals, failed renewals and Stripe's retries, ends. The
emulator's clock moves between the steps, so the events of one customer are as far apart as a person's clicks.

The events are read back from the emulator's state in creation order, filtered to the types the operator's
endpoint receives (`flask stripe webhook-endpoint` registers the guide's six and the extras of
`app.services.stripe_admin.EXTRA_EVENTS`, `customer.subscription.created` among them), and serialised like the
emulator's own deliveries (`json.dumps(event, indent=2)`).
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import stripe

GOOD_CARD = "4242424242424242"
FAILING_CARD = "4000000000000341"  # pays the first invoice, declines every later charge
PRICES = (
    "price_starter_monthly",
    "price_pro_monthly",
    "price_starter_monthly",
    "price_pro_yearly",
    "price_starter_yearly",
    "price_pro_monthly",
)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Customer:
    user_id: int
    email: str
    customer_id: str = ""
    subscription_id: str = ""


def control(base: str, path: str, data: dict | None = None) -> dict:
    """POST (or GET without data) to the emulator's control API."""
    import urllib.parse

    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(base + path, data=body, method="POST" if data is not None else "GET")
    with _OPENER.open(request, timeout=300) as response:
        return json.loads(response.read())


def subscribe_customer(client: stripe.StripeClient, base: str, c: Customer, price: str, card: str = GOOD_CARD) -> None:
    """A Stripe customer for `c`, subscribed to `price` through Checkout paid with `card` (ids noted on `c`)."""
    customer = client.v1.customers.create(params={"email": c.email, "metadata": {"user_id": str(c.user_id)}})
    c.customer_id = customer.id
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "client_reference_id": str(c.user_id),
            "line_items": [{"price": price, "quantity": 1}],
            "metadata": {"user_id": str(c.user_id)},
            "subscription_data": {"metadata": {"user_id": str(c.user_id)}},
            "success_url": "http://127.0.0.1/billing/success?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://127.0.0.1/pricing",
        }
    )
    paid = control(base, f"/_emulator/checkout/{session.id}/complete", {"card": card})
    c.subscription_id = paid["subscription"]


def generate(base: str, first_user_id: int, count: int, threads: int = 4) -> list[Customer]:
    """Create `count` customers' histories in the emulator at `base`; user ids start at `first_user_id`."""
    client = stripe.StripeClient("sk_test_emulator", base_addresses={"api": base}, max_network_retries=2)
    customers = [Customer(first_user_id + i, f"bench{first_user_id + i}@example.com") for i in range(count)]

    def subscribe(i: int) -> None:
        card = FAILING_CARD if i % 7 == 0 else GOOD_CARD
        subscribe_customer(client, base, customers[i], PRICES[i % len(PRICES)], card)

    def change(i: int) -> None:
        c = customers[i]
        if i % 7 == 0:
            return  # the failing card cannot pay a change: these customers just fail at renewal
        kind = i % 5
        if kind in (1, 3):  # upgrade to Pro / switch to Starter monthly, in the "portal"
            sub = client.v1.subscriptions.retrieve(c.subscription_id)
            price = "price_pro_monthly" if kind == 1 else "price_starter_monthly"
            if sub["items"]["data"][0]["price"]["id"] != price:
                client.v1.subscriptions.update(
                    c.subscription_id,
                    params={
                        "items": [{"id": sub["items"]["data"][0]["id"], "price": price}],
                        "proration_behavior": "create_prorations",
                    },
                )
        elif kind in (2, 4):  # cancel at period end (kind 4 resumes a few hours later)
            client.v1.subscriptions.update(c.subscription_id, params={"cancel_at_period_end": True})

    def resume(i: int) -> None:
        if i % 7 and i % 5 == 4:
            client.v1.subscriptions.update(customers[i].subscription_id, params={"cancel_at_period_end": False})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(subscribe, range(count)))
        control(base, "/_emulator/clock/advance", {"hours": 3})
        list(pool.map(change, range(count)))
        control(base, "/_emulator/clock/advance", {"hours": 5})
        list(pool.map(resume, range(count)))
    for _ in range(2):  # two months: renewals, failures, retries, ends
        control(base, "/_emulator/clock/advance", {"days": 31})
    return customers


def events(base: str, types: tuple[str, ...]) -> list[dict]:
    """Every event of the given types, oldest first, as the emulator delivers them."""
    state = control(base, "/_emulator/state")
    return [event for event in state["objects"]["events"].values() if event["type"] in types]


def customer_of(event: dict) -> str | None:
    """The customer an event is about: the object itself for `customer.*` events, else the object's `customer`."""
    obj = event["data"]["object"]
    if obj.get("object") == "customer":
        return obj.get("id")
    customer = obj.get("customer")
    return customer.get("id") if isinstance(customer, dict) else customer


def body_of(event: dict) -> str:
    """The delivery body exactly as the emulator serialises it."""
    return json.dumps(event, indent=2)
