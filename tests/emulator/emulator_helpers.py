"""Shared helpers for the emulator tests (a unique module name: tests/ has no packages)."""

from __future__ import annotations


def new_checkout(client, price="price_starter_monthly", **extra):
    params = {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "success_url": "http://127.0.0.1:9/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1:9/pricing",
    }
    if "customer" not in extra and "customer_email" not in extra:
        params["customer_email"] = "jenny@example.com"
    params.update(extra)
    return client.v1.checkout.sessions.create(params)


def subscribe(emulator, client, price="price_starter_monthly", card="4242424242424242", **extra):
    """Checkout + pay; returns the subscription as a StripeObject."""
    cs = new_checkout(client, price, **extra)
    emulator.complete_checkout(cs.id, card=card)
    return client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(cs.id).subscription)
