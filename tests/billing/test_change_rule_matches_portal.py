"""One rule for plan changes, in the app and in the Customer Portal: for every (plan, cycle) → (plan, cycle) pair the
app's decision (now, or at the end of the paid period) equals what the Portal does under the configuration
`flask stripe portal-config` sets. Before, Starter yearly → Pro monthly started at once in the app (and credited the
unused year to the customer's balance, unmentioned) while the Portal waited for the period end; Pro monthly →
Starter yearly was the other way round. And the confirmation tells the truth about what is charged."""

from __future__ import annotations

import re

import pytest
import requests
import sqlalchemy as sa

from app.extensions import db
from app.models import User
from app.services import subscriptions
from tests.billing.test_billing_states import text_of
from tests.billing.test_portal_downgrade import configure_portal, stripe_price

CHOICES = [("starter", "monthly"), ("starter", "yearly"), ("pro", "monthly"), ("pro", "yearly")]

#: The pairs that wait for the period end: a cheaper price for the same length of time (compared per year), or a
#: shorter cycle. Everything else starts now.
WAITS = {
    (("starter", "monthly"), ("starter", "yearly")),  # $199.99 a year instead of $239.88
    (("starter", "yearly"), ("starter", "monthly")),  # shorter
    (("starter", "yearly"), ("pro", "monthly")),  # shorter, though a higher tier
    (("pro", "monthly"), ("starter", "monthly")),
    (("pro", "monthly"), ("starter", "yearly")),  # $199.99 a year instead of $599.88
    (("pro", "monthly"), ("pro", "yearly")),  # $479.99 a year instead of $599.88
    (("pro", "yearly"), ("starter", "monthly")),
    (("pro", "yearly"), ("starter", "yearly")),
    (("pro", "yearly"), ("pro", "monthly")),
}


def portal_waits(stripe_emulator, customer: str, subscription_id: str, price: str) -> bool:
    """The emulator Portal's confirmation step for a switch to `price`: True when it schedules it for the period end."""
    session = stripe_emulator.client().v1.billing_portal.sessions.create(params={"customer": customer})
    page = requests.get(
        session.url, params={"section": "confirm", "sub": subscription_id, "price": price}, timeout=10
    ).text
    when = re.search(r'id="confirm-when">(.*?)</p>', page, re.S)
    assert when, page
    return "starts at the end of your billing period" in when.group(1)


@pytest.mark.parametrize("current", CHOICES, ids=lambda c: "-".join(c))
def test_the_app_and_the_portal_decide_alike_for_every_pair(billing, stripe_emulator, current):
    configure_portal(billing)  # the configuration the app sets, as the deployment does
    billing.subscribe(*current)
    [row] = billing.subscriptions()
    customer = billing.user().stripe_customer_id
    for target in CHOICES:
        if target == current:
            continue
        with billing.app.test_request_context():
            user = db.session.scalar(sa.select(User).where(User.stripe_customer_id == customer))
            app_waits = not subscriptions.plan_change(user, *target).immediate
        price = f"price_{target[0]}_{target[1]}"
        assert portal_waits(stripe_emulator, customer, row.stripe_subscription_id, price) == app_waits, target
        assert app_waits == ((current, target) in WAITS), target


def test_the_rule_compares_prices_per_year_and_follows_the_conditions():
    scheduled_at_period_end = subscriptions.scheduled_at_period_end
    # Unit amounts alone would call Starter yearly ($199.99) dearer than Pro monthly ($49.99).
    assert scheduled_at_period_end(4999, "monthly", 19999, "yearly")  # cheaper per year: waits
    assert not scheduled_at_period_end(1999, "monthly", 47999, "yearly")  # dearer per year: now
    assert scheduled_at_period_end(19999, "yearly", 4999, "monthly")  # shorter: waits
    assert not scheduled_at_period_end(19999, "yearly", 4999, "monthly", conditions=("decreasing_item_amount",))
    assert not scheduled_at_period_end(4999, "monthly", 1999, "monthly", conditions=())


def test_starter_yearly_to_pro_monthly_waits_in_the_app_as_in_the_portal(billing, stripe_emulator):
    billing.subscribe("starter", "yearly")
    [row] = billing.subscriptions()
    page = text_of(billing.client.get("/billing/change?plan=pro&cycle=monthly").get_data(as_text=True))
    assert "You keep Starter until" in page and "charged today" not in page and "starts now" not in page

    response = billing.post("/billing/change", plan="pro", cycle="monthly")
    assert response.status_code == 303
    assert stripe_price(stripe_emulator, row.stripe_subscription_id) == "price_starter_yearly"  # Starter until then
    customer = stripe_emulator.client().v1.customers.retrieve(billing.user().stripe_customer_id)
    assert customer.balance == 0  # no credit made behind the customer's back
    invoices = stripe_emulator.client().v1.invoices.list(params={"customer": customer.id}).data
    assert [invoice.total for invoice in invoices] == [19999]
    assert "changes to Pro (monthly) on" in text_of(billing.client.get("/billing").get_data(as_text=True))


def test_a_credit_shows_on_the_invoice_and_billing_page_and_a_change_it_pays_says_nothing_is_charged(
    billing, stripe_emulator
):
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    client = stripe_emulator.client()
    # A switch made now to a cheaper price (as a Dashboard or an API call may make it): the invoice is negative.
    sub = client.v1.subscriptions.retrieve(row.stripe_subscription_id)
    client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "price": "price_starter_monthly"}],
            "proration_behavior": "always_invoice",
        },
    )
    customer = client.v1.customers.retrieve(billing.user().stripe_customer_id)
    credit = -customer.balance
    assert credit > 0
    [negative] = [i for i in client.v1.invoices.list(params={"customer": customer.id}).data if i.total < 0]
    hosted = text_of(requests.get(negative.hosted_invoice_url, timeout=10).text)
    dollars = f"${credit / 100:,.2f}"
    assert f"Credited to customer balance {dollars}" in hosted and "Applied balance" not in hosted

    page = text_of(billing.client.get("/billing?from=portal").get_data(as_text=True))  # the Portal return syncs
    assert f"Credit balance {dollars}" in page
    assert f"−{dollars} Credited to balance" in page  # the negative invoice, not "Paid"

    page = text_of(billing.client.get("/billing/change?plan=pro&cycle=monthly").get_data(as_text=True))
    assert "Due today $0.00" in page
    assert "your account's credit balance pays for it, so nothing is charged to your card" in page
    assert "card on file is charged" not in page


def test_a_charged_change_names_the_amount_charged(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    page = text_of(billing.client.get("/billing/change?plan=pro&cycle=monthly").get_data(as_text=True))
    due = re.search(r"Due today (\$[\d.,]+)", page).group(1)
    assert due != "$0.00" and f"your card on file is charged {due} today" in page
