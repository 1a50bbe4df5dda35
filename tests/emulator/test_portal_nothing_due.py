"""The Portal's confirmation of a plan change invoiced at once says what is charged: "charged now" only when the
invoice asks for money. A change whose invoice the customer's credit pays, or one that credits the unused time,
charges nothing now, and the page says so (it used to say "this invoice is charged now" over an amount due of $0.00).
Plain HTTP against the emulator."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request

from emulator_helpers import subscribe

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def confirmation(client, sub, price: str, configuration: str | None = None) -> tuple[str, str]:
    """The Portal's confirmation step for switching `sub` to `price`: (what it says of the charge, the amount due
    today)."""
    params = {"customer": sub.customer} | ({"configuration": configuration} if configuration else {})
    portal = client.v1.billing_portal.sessions.create(params)
    query = urllib.parse.urlencode({"section": "confirm", "sub": sub.id, "price": price})
    with _OPENER.open(f"{portal.url}?{query}", timeout=10) as response:
        page = response.read().decode()
    when = re.search(r'id="confirm-when">(.*?)</p>', page, re.S)
    due = re.search(r'id="confirm-due">(.*?)<', page)
    assert when and due, page
    return " ".join(when.group(1).split()), due.group(1)


def test_an_upgrade_the_credit_balance_pays_charges_nothing_now(emulator, client):
    sub = subscribe(emulator, client, "price_starter_monthly")
    client.v1.customers.update(sub.customer, {"balance": -100_000})  # $1,000.00 of credit

    # Starter monthly to Pro yearly: a longer interval, invoiced at once (the default configuration), all of it
    # paid from the credit.
    said, due = confirmation(client, sub, "price_pro_yearly")

    assert due == "$0.00"
    assert "invoice is charged now" not in said
    assert said == "Your new plan starts today. Nothing is charged now: your credit balance pays this invoice."


def test_a_change_that_credits_the_unused_time_charges_nothing_now(emulator, client):
    sub = subscribe(emulator, client, "price_pro_monthly")
    emulator.advance(days=10)
    now = client.v1.billing_portal.configurations.create(  # every switch made now, its prorations invoiced at once
        {
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "proration_behavior": "always_invoice",
                    "products": [
                        {"product": "prod_starter", "prices": ["price_starter_monthly"]},
                        {"product": "prod_pro", "prices": ["price_pro_monthly"]},
                    ],
                }
            }
        }
    )

    said, due = confirmation(client, sub, "price_starter_monthly", configuration=now.id)

    assert due == "$0.00"
    assert "invoice is charged now" not in said
    assert said == (
        "Your new plan starts today. Nothing is charged now: the unused time on your current plan is added to your "
        "credit balance, for your next invoices."
    )


def test_an_upgrade_that_costs_something_is_charged_now(emulator, client):
    sub = subscribe(emulator, client, "price_starter_monthly")

    said, due = confirmation(client, sub, "price_pro_yearly")

    assert due != "$0.00"
    assert said == "Your new plan starts today and this invoice is charged now to Visa •••• 4242."
