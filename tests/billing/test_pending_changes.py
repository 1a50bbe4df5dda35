"""What is pending on a subscription — a cancellation, a downgrade at period end — and what later changes do to it.

The pages, the emulator over HTTP (its clock moves the subscription through the schedule's phases) and the app's
real webhook endpoint; nothing of ours is mocked.
"""

import re

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog
from app.templating import date


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))


def stripe_subscription(billing):
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    return billing.emulator.client().v1.subscriptions.retrieve(sub.id, {"expand": ["schedule"]})


def billing_period_line(billing) -> str:
    html = billing.client.get("/billing").get_data(as_text=True)
    start = html.index('data-testid="billing-period"')
    return " ".join(html[start : html.index("</div>", start)].split())


def test_a_downgrade_while_a_cancellation_is_pending_withdraws_the_cancellation(
    billing, stripe_emulator, webhooks_to_app
):
    billing.subscribe("pro", "yearly")
    billing.post("/billing/cancel")
    [row] = billing.subscriptions()
    period_end = row.current_period_end
    assert row.cancel_at_period_end and "then Free" in billing_period_line(billing)

    done = billing.post("/billing/change", plan="starter", cycle="yearly")
    assert done.status_code == 303
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.cancel_at_period_end) == ("pro", "yearly", False)
    sub = stripe_subscription(billing)
    assert sub.cancel_at_period_end is False and sub.cancel_at is None
    assert sub.schedule.phases[-1]["items"][0].price == "price_starter_yearly"
    line = billing_period_line(billing)
    assert "then Free" not in line
    assert f"changes to <strong>Starter (yearly)</strong> on {date(period_end)}" in line
    # Withdrawing the cancellation is the same transition as the Resume button: audited once as such.
    assert audit_actions(billing.app).count("subscription.resumed") == 1

    # The period ends: Starter starts, the customer is not dropped to Free.
    stripe_emulator.advance(to=int(period_end.timestamp()) + 60)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("starter", "yearly", "active")
    latest = stripe_emulator.client().v1.invoices.retrieve(stripe_subscription(billing).latest_invoice)
    assert (latest.status, latest.amount_paid) == ("paid", 19999)


def test_the_confirmation_of_a_downgrade_says_it_withdraws_a_pending_cancellation(billing):
    billing.subscribe("pro", "yearly")
    billing.post("/billing/cancel")
    from app.services.subscriptions import plan_change

    with billing.app.test_request_context():
        user = billing.user()
        assert plan_change(user, "starter", "yearly").withdraws_cancellation is True
        assert plan_change(user, "starter", "monthly").withdraws_cancellation is True
    page = billing.client.get("/billing/change?plan=starter&cycle=yearly").get_data(as_text=True)
    assert 'data-testid="withdraws-cancellation"' in page
    assert "Your cancellation is withdrawn:" in page and "then Starter renews" in page
    response = billing.post("/billing/change", plan="starter", cycle="yearly")
    assert "Your cancellation is withdrawn." in billing.client.get(response.headers["Location"]).get_data(as_text=True)
    billing.post("/billing/resume")
    with billing.app.test_request_context():
        assert plan_change(billing.user(), "starter", "yearly").withdraws_cancellation is False
    assert "withdraws-cancellation" not in billing.client.get("/billing/change?plan=pro&cycle=monthly").get_data(
        as_text=True
    )


def test_a_downgrade_that_has_started_is_no_longer_shown_as_pending(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/change", plan="starter", cycle="monthly")
    [row] = billing.subscriptions()
    assert f"changes to <strong>Starter (monthly)</strong> on {date(row.current_period_end)}" in billing_period_line(
        billing
    )

    stripe_emulator.advance(days=31)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("starter", "monthly", "active")
    assert stripe_subscription(billing).schedule is not None  # still attached during its last phase
    line = billing_period_line(billing)
    assert "changes to" not in line  # the past phase (Pro) is not a pending change
    assert f"$19.99 / month · renews on {date(row.current_period_end)}" in line


def test_an_upgrade_releases_a_pending_downgrade_so_it_never_applies(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("starter", "monthly")
    billing.post("/billing/change", plan="starter", cycle="yearly")  # cheaper for a year: at the period end
    schedule_id = stripe_subscription(billing).schedule.id

    billing.post("/billing/change", plan="pro", cycle="monthly")  # immediate, charged now
    stripe_emulator.flush()
    sub = stripe_subscription(billing)
    assert sub.schedule is None
    assert stripe_emulator.client().v1.subscription_schedules.retrieve(schedule_id).status == "released"
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("pro", "monthly")
    line = billing_period_line(billing)
    assert "changes to" not in line and "$49.99 / month · renews on" in line

    # Past the end of the old monthly period (where the stale phase would have started): still Pro monthly.
    stripe_emulator.advance(days=35)
    stripe_emulator.flush()
    assert stripe_subscription(billing)["items"].data[0].price.id == "price_pro_monthly"
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("pro", "monthly", "active")


def test_cancel_drops_a_pending_downgrade_and_resume_keeps_the_current_plan(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/change", plan="starter", cycle="monthly")
    assert stripe_subscription(billing).schedule is not None

    cancel = billing.post("/billing/cancel")
    assert cancel.status_code == 303
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end
    sub = stripe_subscription(billing)
    assert sub.schedule is None and sub.cancel_at_period_end is True
    line = billing_period_line(billing)
    assert f"Pro until {date(row.current_period_end)}</strong>, then Free" in line and "changes to" not in line

    billing.post("/billing/resume")
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert not row.cancel_at_period_end
    assert "$49.99 / month · renews on" in billing_period_line(billing)
    stripe_emulator.advance(days=31)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("pro", "monthly", "active")


def test_the_account_page_shows_a_pending_cancellation_or_plan_change(billing, stripe_emulator):
    billing.subscribe("pro", "yearly")
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)

    def plan_line() -> str:
        html = billing.client.get("/account").get_data(as_text=True)
        start = html.index('data-testid="plan-outlook"')
        return re.sub(r"<[^>]+>", "", " ".join(html[start : html.index("</div>", start)].split()))

    assert f"Renews on {ends}" in plan_line()
    billing.post("/billing/change", plan="starter", cycle="yearly")
    assert f"Changes to Starter (yearly) on {ends}" in plan_line()
    billing.post("/billing/cancel")
    line = plan_line()
    assert f"Pro until {ends}, then Free" in line and "Changes to" not in line


def test_the_account_page_asks_stripe_once_per_version_of_the_subscription(billing):
    """Views of the account page reuse what Stripe said of the schedule until the subscription row changes."""
    from prometheus_client import REGISTRY

    def stripe_requests() -> float:
        return REGISTRY.get_sample_value("stripe_api_request_seconds_count") or 0

    billing.subscribe("pro", "yearly")
    billing.client.get("/account")
    before = stripe_requests()
    for _ in range(3):
        assert "Renews on" in billing.client.get("/account").get_data(as_text=True)
    assert stripe_requests() == before
    billing.post("/billing/change", plan="starter", cycle="yearly")  # a billing commit: the next view asks again
    page = re.sub(r"<[^>]+>", "", billing.client.get("/account").get_data(as_text=True))
    assert "Changes to Starter (yearly)" in page
    assert stripe_requests() > before
