"""What Pricing shows while a change is pending: the current plan's card says when the plan ends, what it changes to,
and offers to keep it — for a cancellation at period end as for a scheduled downgrade — and the button undoing a
switch to the other cycle of the same plan says what it keeps (the billing cycle, not the plan, which stays).

The pages through the test client, the emulator over HTTP; nothing of ours is mocked.
"""

from __future__ import annotations

import re

from app.templating import date
from tests.billing.test_pending_changes import billing_period_line, stripe_subscription
from tests.conftest import csrf_token_from


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def card(pricing: str, plan: str) -> str:
    """The HTML of one plan's card on the pricing page."""
    start = pricing.index(f'data-plan="{plan}"')
    return pricing[start : pricing.index("</article>", start)]


def slot(card_html: str, cycle: str) -> str:
    """The card's action for one billing cycle: the element of class `choose-<cycle>`, from its opening tag up to
    the next cycle's element."""
    start = card_html.rindex("<", 0, card_html.index(f"choose-{cycle}"))
    after = card_html.find("choose-", card_html.index(f"choose-{cycle}") + len(f"choose-{cycle}"))
    end = card_html.rindex("<", 0, after) if after != -1 else len(card_html)
    return card_html[start:end]


def test_a_pending_cancellation_is_marked_on_the_current_card_with_a_way_to_keep_the_plan(billing, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/cancel").status_code == 303
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end
    ends = date(row.current_period_end)

    pricing = billing.client.get("/pricing").get_data(as_text=True)
    assert f"Free from {ends}" in text_of(card(pricing, "free"))
    monthly = slot(card(pricing, "pro"), "monthly")
    assert f"Ends {ends}: changes to Free" in text_of(monthly)
    assert "Current plan" not in text_of(monthly)
    form = re.search(r"<form[^>]*>.*?</form>", monthly, re.S).group(0)
    assert 'action="/billing/resume"' in form and 'method="post"' in form
    assert csrf_token_from(form)
    assert re.sub(r"\s+", " ", text_of(re.search(r"<button.*?</button>", form, re.S).group(0))) == "Keep Pro monthly"
    # The other cycle stays what it was: a switch (which withdraws the cancellation, its confirmation says so).
    assert "Switch to yearly" in text_of(slot(card(pricing, "pro"), "yearly"))

    # The button, as the browser posts it (its own form's token): the plan renews.
    resumed = billing.client.post("/billing/resume", data={"csrf_token": csrf_token_from(form)})
    assert resumed.status_code == 303
    assert "Welcome back — your Pro plan will renew." in billing.client.get("/billing").get_data(as_text=True)
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end is False
    assert stripe_subscription(billing).cancel_at_period_end is False
    assert f"renews on {ends}" in billing_period_line(billing)
    pricing = billing.client.get("/pricing").get_data(as_text=True)
    assert "changes to Free" not in text_of(pricing) and "Free from" not in text_of(pricing)
    assert "Current plan" in text_of(slot(card(pricing, "pro"), "monthly"))


def test_a_pending_cancellation_without_a_token_changes_nothing(billing, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/cancel")
    refused = billing.client.post("/billing/resume", data={})
    assert refused.status_code == 400
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end is True
    assert stripe_subscription(billing).cancel_at_period_end is True


def test_undoing_a_switch_to_the_other_cycle_says_it_keeps_the_billing_cycle(billing, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="pro", cycle="yearly").status_code == 303
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("pro", "monthly")  # the switch is scheduled, not made
    ends = date(row.current_period_end)

    pricing = billing.client.get("/pricing").get_data(as_text=True)
    monthly = slot(card(pricing, "pro"), "monthly")
    button = text_of(re.search(r"<button.*?</button>", monthly, re.S).group(0))
    assert button == "Keep monthly billing", button
    assert "Keep Pro" not in text_of(pricing)
    assert f"Ends {ends}: changes to Pro (yearly)" in text_of(monthly)

    page = billing.client.get("/billing").get_data(as_text=True)
    keep = re.search(r'<button[^>]*data-testid="keep-plan"[^>]*>.*?</button>', page, re.S).group(0)
    assert text_of(keep) == "Keep monthly billing", keep
    assert "Keep Pro" not in text_of(page)

    kept = billing.post("/billing/keep")
    assert kept.status_code == 303
    assert stripe_subscription(billing).schedule is None
    assert f"renews on {ends}" in billing_period_line(billing)


def test_a_scheduled_downgrade_still_keeps_the_plan_by_name(billing, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/change", plan="starter", cycle="monthly")
    pricing = billing.client.get("/pricing").get_data(as_text=True)
    assert "Keep Pro" in text_of(slot(card(pricing, "pro"), "monthly"))
    page = billing.client.get("/billing").get_data(as_text=True)
    keep = re.search(r'<button[^>]*data-testid="keep-plan"[^>]*>.*?</button>', page, re.S).group(0)
    assert text_of(keep) == "Keep Pro"
