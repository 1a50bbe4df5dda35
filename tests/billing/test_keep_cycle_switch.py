"""A switch to the plan's other cycle, scheduled for the period end, is kept back in the cycle's terms, as the
button reads ("Keep monthly billing"): the flash after it and the "plan_change_scheduled" mail say what is kept —
the cycle — where a downgrade's say "Keep Pro". Before, both said "Keep Pro"/"You keep Pro" for a switch of cycle.

The pages through the test client, the emulator over HTTP, the mail outbox; nothing of ours is mocked."""

from __future__ import annotations

from app.templating import date
from tests.billing.test_billing_states import text_of
from tests.billing.test_pending_changes import stripe_subscription
from tests.billing.test_portal_scheduled_change_mail import scheduled_mails


def test_keeping_monthly_billing_says_the_cycle_is_kept(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="pro", cycle="yearly").status_code == 303
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)
    assert "Keep monthly billing" in billing.client.get("/billing").get_data(as_text=True)

    kept = billing.post("/billing/keep")
    assert kept.status_code == 303 and kept.headers["Location"].endswith("/billing")
    page = text_of(billing.client.get("/billing").get_data(as_text=True))
    assert f"You keep monthly billing: Pro renews monthly on {ends}." in page
    assert "You keep Pro" not in page
    assert stripe_subscription(billing).schedule is None


def test_keeping_the_plan_still_says_the_plan_is_kept(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    [row] = billing.subscriptions()
    assert billing.post("/billing/keep").status_code == 303
    page = text_of(billing.client.get("/billing").get_data(as_text=True))
    assert f"You keep Pro: it renews on {date(row.current_period_end)}." in page
    assert "billing:" not in page


def test_the_scheduled_change_mail_keeps_the_cycle_or_the_plan(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="pro", cycle="yearly").status_code == 303
    [switch] = scheduled_mails(billing.app)
    body = " ".join(switch.body.split())
    assert "changes from Pro (monthly) to Pro (yearly)" in body
    assert "Changed your mind? Keep monthly billing at http" in body and "Keep Pro at" not in body

    # Withdrawn, then a downgrade scheduled instead: its mail keeps the plan.
    assert billing.post("/billing/keep").status_code == 303
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    _, downgrade = scheduled_mails(billing.app)
    body = " ".join(downgrade.body.split())
    assert "changes from Pro (monthly) to Starter (monthly)" in body
    assert "Changed your mind? Keep Pro at http" in body and "billing at" not in body
