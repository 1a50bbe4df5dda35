"""Every billing state says what it is and offers the way out of it: a scheduled downgrade can be kept back, a
past-due subscription says what is owed and when Stripe tries again, a subscription to the $0 price is Free.

The pages through the test client, the emulator over HTTP (its clock drives renewals and retries); nothing of ours
is mocked.
"""

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AlertSettings, AuditLog, User
from app.services.stripe_gateway import from_timestamp
from app.templating import date
from tests.billing.test_pending_changes import billing_period_line, stripe_subscription

FAILING_CARD = "4000000000000341"


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_keep_pro_releases_the_scheduled_downgrade(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)

    page = billing.client.get("/billing").get_data(as_text=True)
    assert 'data-testid="keep-plan"' in page and "Keep Pro" in page
    pricing = billing.client.get("/pricing").get_data(as_text=True)
    pro_card = pricing[pricing.index('data-plan="pro"') :]
    starter_card = pricing[pricing.index('data-plan="starter"') : pricing.index('data-plan="pro"')]
    assert "Keep Pro" in pro_card and f"Ends {ends}: changes to Starter (monthly)" in text_of(pro_card)
    assert f"Starts {ends}" in text_of(starter_card)
    assert "Switch to Starter" not in starter_card.split("choose-yearly")[0]

    kept = billing.post("/billing/keep")
    assert kept.status_code == 303 and kept.headers["Location"].endswith("/billing")
    assert f"You keep Pro: it renews on {ends}." in billing.client.get("/billing").get_data(as_text=True)
    assert stripe_subscription(billing).schedule is None
    assert f"renews on {ends}" in billing_period_line(billing)
    assert "Keep Pro" not in billing.client.get("/pricing").get_data(as_text=True)

    # Nothing left to keep: a refusal flashed on the billing page, never an error page.
    again = billing.post("/billing/keep")
    assert again.status_code == 303
    assert "No plan change is scheduled" in billing.client.get("/billing").get_data(as_text=True)

    # The period ends on Pro.
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.status) == ("pro", "active")


def test_every_downgrade_confirmation_lists_what_is_lost(billing):
    billing.subscribe("pro", "monthly")
    page = text_of(billing.client.get("/billing/change?plan=starter&cycle=monthly").get_data(as_text=True))
    assert "What changes on Starter" in page
    assert "API access Not included" in page and "Real-time alerts Not included" in page
    # The same plan yearly loses nothing; it is cheaper for a year, so it waits for the period end (as the Portal
    # does) and says the plan is billed yearly from then, not that it starts.
    yearly = text_of(billing.client.get("/billing/change?plan=pro&cycle=yearly").get_data(as_text=True))
    assert "What changes on" not in yearly
    assert "You keep your monthly Pro plan until" in yearly and "it is billed yearly from then on" in yearly
    assert "Pro starts" not in yearly and "charged today" not in yearly


def test_past_due_says_what_is_owed_and_when_stripe_retries(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("starter", "monthly", card=FAILING_CARD)
    [row] = billing.subscriptions()
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert row.status == "past_due"
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    invoice = stripe_emulator.client().v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.next_payment_attempt
    retry = date(from_timestamp(invoice.next_payment_attempt))

    page = billing.client.get("/billing").get_data(as_text=True)
    banner = text_of(
        page[
            page.index('data-testid="past-due-banner"') : page.index(
                "</form>", page.index('data-testid="past-due-banner"')
            )
        ]
    )
    assert "Your last payment failed: $19.99 is due." in banner
    assert f"Stripe tries your card again on {retry}" in banner and "Update card" in banner
    line = billing_period_line(billing)
    assert "renews on" not in line and "$19.99 unpaid" in text_of(line) and f"next retry on {retry}" in line
    assert 'data-testid="payment-banner"' not in page  # the billing page's own banner says it in full

    for path in ("/pricing", "/account", "/strategies/", "/alerts/"):
        other = billing.client.get(path).get_data(as_text=True)
        assert 'data-testid="payment-banner"' in other, path
        assert "Update card" in other


def test_a_subscription_to_the_zero_price_is_free(billing, stripe_emulator):
    billing.subscribe("pro", "monthly")
    client = stripe_emulator.client()
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    item = sub["items"]["data"][0]["id"]
    client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item, "price": "price_free_monthly"}], "proration_behavior": "none"}
    )
    page = billing.client.get("/billing?from=portal").get_data(as_text=True)
    [row] = billing.subscriptions()
    assert row.plan.name == "free"
    summary = text_of(page[page.index('data-testid="billing-plan"') : page.index('data-testid="invoices"')])
    assert summary.startswith('data-testid="billing-plan">Free') and "renews" not in summary
    assert "Cancel plan" not in page
    assert "Upgrade" in summary

    pricing = billing.client.get("/pricing").get_data(as_text=True)
    free_card = pricing[pricing.index('data-plan="free"') : pricing.index('data-plan="starter"')]
    assert "Current plan" in free_card and "Downgrade to Free" not in free_card

    cancel = billing.client.get("/billing/cancel")
    assert cancel.status_code == 303
    refused = billing.post("/billing/cancel")
    assert refused.status_code == 303
    assert "no paid plan to cancel" in billing.client.get("/billing").get_data(as_text=True)


def test_leaving_checkout_keeps_the_cycle_and_says_nothing_was_charged(billing, stripe_emulator):
    response = billing.checkout("pro", "yearly")
    session_id = response.headers["Location"].rsplit("/", 1)[-1]
    cancel_url = stripe_emulator.client().v1.checkout.sessions.retrieve(session_id).cancel_url
    page = billing.client.get(cancel_url[cancel_url.index("/pricing") :]).get_data(as_text=True)
    assert 'data-testid="left-checkout"' in page and "nothing was charged" in page
    assert re.search(r'id="cycle-yearly" checked', page)


def test_a_declined_upgrade_says_nothing_changed_and_offers_the_card(billing, stripe_emulator):
    billing.subscribe("starter", "monthly", card=FAILING_CARD)
    refused = billing.post("/billing/change", plan="pro", cycle="monthly")
    assert refused.status_code == 303 and refused.headers["Location"].endswith("/billing")
    page = billing.client.get("/billing").get_data(as_text=True)
    declined = text_of(
        page[
            page.index('data-testid="card-declined"') : page.index("</form>", page.index('data-testid="card-declined"'))
        ]
    )
    assert "Nothing changed and nothing was charged" in declined and "Update card" in declined
    [row] = billing.subscriptions()
    assert row.plan.name == "starter"


def test_paid_plans_list_what_they_add_to_free(client, seeded):
    page = client.get("/pricing").get_data(as_text=True)
    starter = text_of(page[page.index('data-plan="starter"') : page.index('data-plan="pro"')])
    assert "Everything in Free, plus" in starter and "Paper trading" not in starter
    assert "Up to 25 strategies" in starter


def test_a_plan_ended_by_failed_payments_says_so_and_explains_its_invoice(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("starter", "monthly", card=FAILING_CARD)
    [row] = billing.subscriptions()
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    for _ in range(3):  # the retries, three days apart, until Stripe gives up and ends the subscription
        stripe_emulator.advance(days=3)
        stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert row.status == "canceled"
    page = billing.client.get("/billing").get_data(as_text=True)
    ended = text_of(
        page[page.index('data-testid="plan-ended"') : page.index("</div>", page.index('data-testid="plan-ended"'))]
    )
    assert f"Your Starter plan ended on {date(row.ended_at)} because the payment failed" in ended
    assert "Unpaid · plan ended" in page and ">Open<" not in page
    assert 'data-testid="payment-banner"' not in billing.client.get("/pricing").get_data(as_text=True)


def test_a_scheduled_downgrade_and_its_withdrawal_are_audited(billing):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/change", plan="starter", cycle="monthly")
    billing.post("/billing/keep")
    with billing.app.app_context():
        entries = db.session.scalars(sa.select(AuditLog).order_by(AuditLog.id)).all()
        by_action = {entry.action: entry.details for entry in entries}
    assert by_action["subscription.downgrade_scheduled"]["plan"] == "starter"
    assert by_action["subscription.downgrade_scheduled"]["cycle"] == "monthly"
    assert by_action["subscription.downgrade_withdrawn"]["plan"] == "pro"


def test_the_navigation_marks_the_current_page(billing):
    page = billing.client.get("/billing").get_data(as_text=True)
    assert re.search(r'class="nav-link active" href="/billing" aria-current="page"', page)
    assert 'href="/pricing" aria-current' not in page


def test_the_real_time_switch_is_off_when_the_plan_has_no_real_time_alerts(billing):
    billing.subscribe("starter", "monthly")  # email alerts, no real-time ones; the saved setting says on
    with billing.app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "trader@example.com"))
        db.session.add(AlertSettings(user_id=user.id, email_enabled=True, realtime_enabled=True))
        db.session.commit()
    page = billing.client.get("/alerts/").get_data(as_text=True)
    switch = re.search(r'<input[^>]*id="realtime_enabled"[^>]*>', page).group(0)
    assert "disabled" in switch and "checked" not in switch


def test_the_switch_to_the_other_cycle_is_named_once(billing, stripe_emulator, webhooks_to_app):
    """A screen reader read the Starter card's button "Switch to yearly yearly" to a Starter monthly user."""
    billing.subscribe("starter", "monthly")
    pricing = billing.client.get("/pricing").get_data(as_text=True)
    starter_card = pricing[pricing.index('data-plan="starter"') : pricing.index('data-plan="pro"')]
    yearly = starter_card[starter_card.index('class="choose-yearly"') :]
    button = text_of(yearly[yearly.index("<button") : yearly.index("</button>") + 9])
    assert button == "Switch to yearly", button
