"""The portal's Update plan terms say what a switch to the other billing interval does, and the switch does it: for
each set of `schedule_at_period_end` conditions, a monthly → yearly and a yearly → monthly switch wait for the end
of the billing period exactly when the terms say so, and are invoiced today exactly when they say that. (The terms
used to say "Switching to yearly billing is charged today." while the confirmation of Pro monthly → Pro yearly
said it starts at the end of the period, $0.00 due today: `decreasing_item_amount` compares prices over a year, and
Pro yearly costs less than twelve Pro months.)"""

from __future__ import annotations

import datetime as dt
import html
import re
import urllib.parse

import pytest
from emulator_helpers import subscribe
from test_pages import get, post

BOTH = ("decreasing_item_amount", "shortening_interval")
ALL_PRICES = [
    {"product": "prod_starter", "prices": ["price_starter_monthly", "price_starter_yearly"]},
    {"product": "prod_pro", "prices": ["price_pro_monthly", "price_pro_yearly"]},
]
WORDS = {"price_pro_monthly": "monthly", "price_pro_yearly": "yearly"}


def configuration(client, conditions: tuple[str, ...], proration_behavior: str) -> str | None:
    """The default configuration for both conditions (the one `make run` uses), else one made with `conditions`."""
    if conditions == BOTH and proration_behavior == "create_prorations":
        return None
    update = {
        "enabled": True,
        "default_allowed_updates": ["price"],
        "proration_behavior": proration_behavior,
        "products": ALL_PRICES,
    }
    if conditions:
        update["schedule_at_period_end"] = {"conditions": [{"type": c} for c in conditions]}
    return client.v1.billing_portal.configurations.create({"features": {"subscription_update": update}}).id


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def update_terms(portal_url: str) -> str:
    status, _, body = get(portal_url + "?section=update")
    assert status == 200
    found = re.search(r'id="update-terms">(.*?)</p>', body.decode(), re.S)
    assert found
    return text_of(found.group(1))


def what_the_terms_say(terms: str, word: str, product: str) -> str:
    """When ("later" or "now") the terms' sentence on switching to `word` billing says `product` starts."""
    (sentence,) = [s for s in re.split(r"(?<=\.) (?=[A-Z])", terms) if s.startswith(f"Switching to {word} billing")]
    if " takes effect now: your billing period restarts today and the new price is invoiced today" in sentence:
        return "now"
    if sentence.endswith("; nothing is charged today."):
        return "later"
    waits, now = sentence.split(", and takes effect now, invoiced today", 1)
    assert (product in waits) != (product in now), sentence
    return "later" if product in waits else "now"


@pytest.mark.parametrize("proration_behavior", ["create_prorations", "none"])
@pytest.mark.parametrize(
    "conditions", [BOTH, ("decreasing_item_amount",), ("shortening_interval",), ()], ids=lambda c: "+".join(c) or "none"
)
@pytest.mark.parametrize(
    "switch", [("price_pro_monthly", "price_pro_yearly"), ("price_pro_yearly", "price_pro_monthly")]
)
def test_the_terms_of_a_switch_of_interval_say_what_the_switch_does(
    emulator, client, conditions, proration_behavior, switch
):
    current, target = switch
    sub = subscribe(emulator, client, current)
    emulator.advance(days=3)  # some of the period used: a switch made now restarts it, with unused time to credit
    config = configuration(client, conditions, proration_behavior)
    params = {"customer": sub.customer, **({"configuration": config} if config else {})}
    portal = client.v1.billing_portal.sessions.create(params).url
    terms = update_terms(portal)
    said = what_the_terms_say(terms, WORDS[target], "Pro Plan")
    assert "Switching to yearly billing is charged today" not in terms

    ends = sub["items"].data[0].current_period_end
    day = dt.datetime.fromtimestamp(ends, dt.UTC).strftime("%B %-d, %Y")
    query = urllib.parse.urlencode({"section": "confirm", "sub": sub.id, "price": target})
    confirmation = text_of(get(f"{portal}?{query}")[2].decode())
    invoices_before = len(client.v1.invoices.list({"customer": sub.customer}).data)
    assert post(portal + "/update", {"subscription": sub.id, "price": target})[0] == 303
    live = client.v1.subscriptions.retrieve(sub.id, {"expand": ["latest_invoice", "schedule"]})
    invoices = client.v1.invoices.list({"customer": sub.customer}).data
    if said == "later":
        assert f"at the end of your billing period on {day}" in terms
        assert f"starts at the end of your billing period on {day}" in confirmation
        assert "Amount due today $0.00" in confirmation
        assert live["items"].data[0].price.id == current and live.schedule  # Pro until then, the switch scheduled
        assert live.schedule.phases[-1]["items"][0].price == target and live.schedule.phases[-1].start_date == ends
        assert len(invoices) == invoices_before
    else:
        assert "starts today" in confirmation
        assert live["items"].data[0].price.id == target  # switched now
        assert live["items"].data[0].current_period_start == live.billing_cycle_anchor > sub.billing_cycle_anchor
        assert len(invoices) == invoices_before + 1
        invoice = live.latest_invoice
        assert invoice.billing_reason == "subscription_update" and invoice.status == "paid"
        amounts = [line.amount for line in invoice.lines.data]
        full = {"price_pro_monthly": 4999, "price_pro_yearly": 47999}[target]
        assert full in amounts  # the new price, invoiced today
        credited = [a for a in amounts if a < 0]
        assert bool(credited) == (proration_behavior != "none")  # less the unused time, as the terms say


def test_a_pro_monthly_yearly_switch_on_the_default_configuration_reads_right(emulator, client):
    """Pro monthly on the default configuration: the yearly switch waits, and the terms say so in as many words."""
    sub = subscribe(emulator, client, "price_pro_monthly")
    portal = client.v1.billing_portal.sessions.create({"customer": sub.customer}).url
    day = dt.datetime.fromtimestamp(sub["items"].data[0].current_period_end, dt.UTC).strftime("%B %-d, %Y")
    assert update_terms(portal).endswith(
        f"Switching to yearly billing starts at the end of your billing period on {day}; nothing is charged today."
    )


def test_a_mixed_outcome_names_the_plans(emulator, client):
    """Pro yearly with `decreasing_item_amount` alone: Starter monthly costs less over a year (waits), Pro monthly
    more (now)."""
    sub = subscribe(emulator, client, "price_pro_yearly")
    config = configuration(client, ("decreasing_item_amount",), "create_prorations")
    portal = client.v1.billing_portal.sessions.create({"customer": sub.customer, "configuration": config}).url
    day = dt.datetime.fromtimestamp(sub["items"].data[0].current_period_end, dt.UTC).strftime("%B %-d, %Y")
    assert update_terms(portal).endswith(
        f"Switching to monthly billing starts at the end of your billing period on {day} for Starter Plan, and takes "
        "effect now, invoiced today, less the unused time on your current plan, for Pro Plan."
    )
