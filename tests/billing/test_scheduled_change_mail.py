"""A scheduled plan change that takes effect at the period end mails the customer once: "Your plan is now Starter".

The app's pages and webhook endpoint, the emulator's clock moving the subscription into its schedule's next phase,
and the mail outbox; nothing of ours is mocked."""

import sqlalchemy as sa

from app.extensions import db
from app.models import MailOutbox
from app.services.mail import html_body
from app.services.sync import sync_customer
from app.templating import date


def outbox(app, kind: str) -> list[MailOutbox]:
    with app.app_context():
        rows = list(db.session.scalars(sa.select(MailOutbox).where(MailOutbox.kind == kind).order_by(MailOutbox.id)))
        db.session.expunge_all()
        return rows


def test_a_scheduled_downgrade_mails_once_when_it_takes_effect(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    assert outbox(billing.app, "scheduled_change_applied") == []  # scheduled, not yet applied

    [row] = billing.subscriptions()
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle) == ("starter", "monthly")

    [mail] = outbox(billing.app, "scheduled_change_applied")
    assert mail.subject == "Your plan is now Starter"
    assert mail.recipient == "trader@example.com"
    assert "Your Smart Strategies Builder plan is now Starter (monthly)" in mail.body
    assert "when your Pro period ended" in mail.body
    assert f"Starter renews on {date(row.current_period_end)} at $19.99 a month." in mail.body
    with billing.app.test_request_context():
        assert "Your plan is now Starter" in html_body(mail.subject, mail.body)

    with billing.app.app_context():  # a later sync (the nightly one, a redelivered event) sends nothing more
        sync_customer(billing.user().stripe_customer_id)
    assert len(outbox(billing.app, "scheduled_change_applied")) == 1


def test_a_change_made_now_sends_no_such_mail(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("starter", "monthly")
    assert billing.post("/billing/change", plan="pro", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert row.plan.name == "pro"
    assert outbox(billing.app, "scheduled_change_applied") == []


def test_scheduling_a_downgrade_mails_the_customer_once(billing, stripe_emulator):
    """Asking for a cheaper plan at the period end is put in writing, as a scheduled cancellation is: when, at what
    price, what goes, and how to keep the plan; asking again for the same change sends nothing more."""
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303

    [mail] = outbox(billing.app, "plan_change_scheduled")
    on = date(row.current_period_end)
    assert mail.subject == f"Your plan changes to Starter on {on}"
    assert mail.recipient == "trader@example.com"
    body = " ".join(mail.body.split())
    assert f"changes from Pro (monthly) to Starter (monthly) on {on}, when the period you have paid for ends" in body
    assert f"From {on}, Starter renews at $19.99 a month." in body
    assert "What changes on Starter: Up to 25 strategies instead of unlimited strategies," in body
    assert "No longer included: Real-time alerts, API access, Priority support." in body
    assert "Keep Pro at http://localhost/billing" in body
    assert outbox(billing.app, "scheduled_change_applied") == []  # that one is for the day it takes effect
    with billing.app.test_request_context():
        html = html_body(mail.subject, mail.body)
    assert f"Your plan changes to Starter on {on}" in html and 'href="http://localhost/billing"' in html


def test_an_upgrade_made_now_mails_no_scheduled_change(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    assert billing.post("/billing/change", plan="pro", cycle="monthly").status_code == 303
    assert outbox(billing.app, "plan_change_scheduled") == []
