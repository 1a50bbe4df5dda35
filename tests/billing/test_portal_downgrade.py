"""A plan switch in the Customer Portal follows the app's own rule once `flask stripe portal-config` has set the
portal: a cheaper plan or a shorter interval waits for the paid period to end (a subscription schedule), a dearer
plan starts now. Before, the portal switched a Pro customer to Starter at once and invoiced a credit, while the same
change made in the app waited for the period end."""

from __future__ import annotations

from tests.billing.test_billing_states import text_of
from tests.ops.test_six_events_life_cycle import Portal


def configure_portal(billing) -> None:
    result = billing.app.test_cli_runner().invoke(args=["stripe", "portal-config"])
    assert result.exit_code == 0, result.output
    assert "  downgrades: at period end (a cheaper price or a shorter interval)" in result.output.splitlines()


def subscribed_in_portal(billing, stripe_emulator, plan: str, cycle: str):
    """The portal set by `flask stripe portal-config`, a subscription to `plan`/`cycle` applied by its webhooks, and
    its customer's Portal: (the subscription row, the Portal)."""
    configure_portal(billing)
    billing.subscribe(plan, cycle)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    return row, Portal(stripe_emulator, billing.user().stripe_customer_id)


def stripe_price(stripe_emulator, subscription_id: str) -> str:
    return stripe_emulator.client().v1.subscriptions.retrieve(subscription_id)["items"].data[0].price.id


def test_a_cheaper_plan_chosen_in_the_portal_starts_at_the_period_end(billing, stripe_emulator, webhooks_to_app):
    row, portal = subscribed_in_portal(billing, stripe_emulator, "pro", "monthly")

    portal.post("update", subscription=row.stripe_subscription_id, price="price_starter_monthly")

    assert stripe_price(stripe_emulator, row.stripe_subscription_id) == "price_pro_monthly"  # Pro until the end
    [row] = billing.subscriptions()
    assert (row.plan.name, row.status) == ("pro", "active")
    invoices = stripe_emulator.client().v1.invoices.list(params={"customer": billing.user().stripe_customer_id}).data
    assert [invoice.total for invoice in invoices] == [4999]  # no credit invoiced for the switch
    page = text_of(billing.client.get("/billing").get_data(as_text=True))
    assert "changes to Starter (monthly) on" in page

    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)  # the period ends: Starter begins
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("starter", "monthly", "active")


def test_a_shorter_interval_waits_and_a_dearer_plan_starts_now(billing, stripe_emulator, webhooks_to_app):
    row, portal = subscribed_in_portal(billing, stripe_emulator, "starter", "yearly")

    portal.post("update", subscription=row.stripe_subscription_id, price="price_starter_monthly")
    assert stripe_price(stripe_emulator, row.stripe_subscription_id) == "price_starter_yearly"
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("starter", "yearly")

    portal.post("update", subscription=row.stripe_subscription_id, price="price_pro_yearly")
    assert stripe_price(stripe_emulator, row.stripe_subscription_id) == "price_pro_yearly"
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("pro", "yearly", "active")
