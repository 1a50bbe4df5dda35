"""A cheaper plan scheduled in the Customer Portal is put in writing as one scheduled in the app is: one
"plan_change_scheduled" mail (when, at what price, what goes, how to keep the plan), whoever made the change, however
many times its webhook or a sync brings it. Before, only the app's own change mailed: the Portal's (a subscription
schedule, `flask stripe portal-config`'s `schedule_at_period_end`) reached the app by webhook and sync and was
written to the row silently.

The emulator's Portal over HTTP, its webhooks to the app's real endpoint registered for the deployment guide's six
events only (so no `subscription_schedule.*` event helps), the mail outbox; nothing of ours is mocked."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import MailOutbox
from app.services.sync import sync_customer
from app.services.webhooks import API_VERSION, GUIDE_EVENTS
from app.templating import date
from tests.billing.test_portal_downgrade import configure_portal
from tests.ops.test_six_events_life_cycle import Portal


@pytest.fixture
def guide_webhooks(seeded, stripe_emulator, live_server):
    """The app's endpoint registered with the emulator for the guide's six events, as the guide has it set up."""
    endpoint = stripe_emulator.client().v1.webhook_endpoints.create(
        params={"url": live_server.webhook_url, "enabled_events": list(GUIDE_EVENTS), "api_version": API_VERSION}
    )
    previous = seeded.config["STRIPE_WEBHOOK_SECRET"]
    seeded.config["STRIPE_WEBHOOK_SECRET"] = endpoint.secret
    yield live_server
    seeded.config["STRIPE_WEBHOOK_SECRET"] = previous


def scheduled_mails(app) -> list[MailOutbox]:
    with app.app_context():
        rows = list(
            db.session.scalars(
                sa.select(MailOutbox).where(MailOutbox.kind == "plan_change_scheduled").order_by(MailOutbox.id)
            )
        )
        db.session.expunge_all()
        return rows


def subscribed_to(billing, stripe_emulator, plan: str = "pro"):
    """`plan` monthly, paid through Checkout with the guide's webhooks delivered; (its row, the customer's Portal)."""
    configure_portal(billing)
    billing.subscribe(plan, "monthly")
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    return row, Portal(stripe_emulator, billing.user().stripe_customer_id)


def schedule_id(billing) -> str:
    """The id of the schedule attached to the customer's subscription at Stripe (the scheduled change's key ends
    with it: a change withdrawn and scheduled again is another schedule, mailed again)."""
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    return sub.schedule


def failed_deliveries(stripe_emulator) -> list[dict]:
    """Webhook deliveries the app did not take at once (a 500: the event then waits for Stripe's retry)."""
    return [(a["type"], a["status_code"], a["error"]) for a in stripe_emulator.deliveries() if not a["ok"]]


def test_a_downgrade_scheduled_in_the_portal_mails_once(billing, stripe_emulator, guide_webhooks):
    row, portal = subscribed_to(billing, stripe_emulator)
    assert scheduled_mails(billing.app) == []

    portal.post("update", subscription=row.stripe_subscription_id, price="price_starter_monthly")  # webhooks flushed

    [mail] = scheduled_mails(billing.app)  # from the webhook alone: nothing of the app was asked
    on = date(row.current_period_end)
    assert mail.dedupe_key == (
        f"{row.stripe_subscription_id}:scheduled:price_starter_monthly:{row.current_period_end.isoformat()}"
        f":{schedule_id(billing)}"
    )
    assert mail.subject == f"Your plan changes to Starter on {on}"
    assert mail.recipient == "trader@example.com"
    body = " ".join(mail.body.split())
    assert f"changes from Pro (monthly) to Starter (monthly) on {on}, when the period you have paid for ends" in body
    assert f"From {on}, Starter renews at $19.99 a month." in body
    assert "No longer included: Real-time alerts, API access, Priority support." in body
    assert "Keep Pro at http" in body
    assert failed_deliveries(stripe_emulator) == []

    # Back from the Portal (its sync), then a nightly sync: both read the schedule again, and mail nothing more.
    assert billing.client.get("/billing?from=portal").status_code == 200
    with billing.app.app_context():
        sync_customer(billing.user().stripe_customer_id)
    assert len(scheduled_mails(billing.app)) == 1

    # Withdrawn in the app ("Keep Pro"): no mail, as a withdrawn cancellation sends none.
    assert billing.post("/billing/keep").status_code == 303
    stripe_emulator.flush()
    assert len(scheduled_mails(billing.app)) == 1

    # The period ends on Pro, as kept.
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("pro", "monthly")
    assert len(scheduled_mails(billing.app)) == 1


def test_another_change_scheduled_in_the_portal_mails_again(billing, stripe_emulator, guide_webhooks):
    """A scheduled change replaced in the Portal by another one (the schedule's phases rewritten: no event of the
    guide's six says so) is mailed once the app reads it back, on the Portal's return link."""
    row, portal = subscribed_to(billing, stripe_emulator)
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    assert [mail.subject for mail in scheduled_mails(billing.app)] == [
        f"Your plan changes to Starter on {date(row.current_period_end)}"
    ]

    assert failed_deliveries(stripe_emulator) == []

    portal.post("update", subscription=row.stripe_subscription_id, price="price_starter_yearly")
    assert billing.client.get("/billing?from=portal").status_code == 200

    first, second = scheduled_mails(billing.app)
    assert first.dedupe_key.split(":")[2] == "price_starter_monthly"
    assert second.dedupe_key.split(":")[2] == "price_starter_yearly"
    body = " ".join(second.body.split())
    assert f"changes from Pro (monthly) to Starter (yearly) on {date(row.current_period_end)}" in body
    assert "Starter renews at $199.99 a year." in body


def test_a_downgrade_made_in_the_app_still_mails_once(billing, stripe_emulator, guide_webhooks):
    """The app's own change comes back by webhook (the schedule attached) and in its own sync: the key it was mailed
    under keeps it to one mail."""
    row, _ = subscribed_to(billing, stripe_emulator)

    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    # The schedule's webhook, delivered while the change's own transaction writes the mail, waits for it (the user's
    # lock), then finds the mail: neither deadlocks on the mail's key.
    assert failed_deliveries(stripe_emulator) == []
    with billing.app.app_context():
        sync_customer(billing.user().stripe_customer_id)

    [mail] = scheduled_mails(billing.app)
    assert mail.dedupe_key == (
        f"{row.stripe_subscription_id}:scheduled:price_starter_monthly:{row.current_period_end.isoformat()}"
        f":{schedule_id(billing)}"
    )
    assert f"From {date(row.current_period_end)}, Starter renews at $19.99 a month." in " ".join(mail.body.split())


def test_an_upgrade_in_the_portal_mails_no_scheduled_change(billing, stripe_emulator, guide_webhooks):
    row, portal = subscribed_to(billing, stripe_emulator, "starter")
    portal.post("update", subscription=row.stripe_subscription_id, price="price_pro_monthly")  # made now
    assert billing.client.get("/billing?from=portal").status_code == 200
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("pro", "monthly")
    assert scheduled_mails(billing.app) == []
