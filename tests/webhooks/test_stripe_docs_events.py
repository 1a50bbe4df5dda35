"""Stripe's documented example payloads (tests/fixtures/stripe-docs, see SOURCES.md), signed and posted."""

import json
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, MailOutbox, StripeEvent, User, UserSubscription
from app.services.catalog import seed_plans_from_config
from tests.eventually import eventually
from tests.factories import UserFactory
from tests.webhooks.signing import post_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stripe-docs"
CUSTOMER = "cus_NffrFeUfNV2Hib"
DOCS_PRICE = "price_1MowQULkdIwHu7ixraBm864M"  # "Pro Plan", 4999 usd / month in the docs example


def load(name: str, user_id: int | None = None) -> dict:
    text = (FIXTURES / f"{name}.json").read_text()
    if user_id is not None:
        text = text.replace("REPLACE_USER_ID", str(user_id))
    return json.loads(text)


def test_the_guides_events_in_stripes_documented_shapes(app, client):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE  # the docs' price is our Pro monthly here
    with app.app_context():
        seed_plans_from_config()
        user = UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER)
        user_id = user.id
    secret = app.config["STRIPE_WEBHOOK_SECRET"]

    def post(name):
        response = post_event(client, load(name, user_id), secret)
        assert response.status_code == 200, (name, response.get_json())
        return response.get_json()["status"]

    def subscription():
        with app.app_context():
            row = db.session.scalar(sa.select(UserSubscription))
            return row and (
                row.status,
                row.plan.name,
                row.billing_cycle,
                row.cancel_at_period_end,
                row.current_period_end.isoformat() if row.current_period_end else None,
            )

    assert post("customer.subscription.created") == "processed"
    assert subscription() == ("active", "pro", "monthly", False, "2026-12-20T14:00:00+00:00")
    assert post("checkout.session.completed") == "processed"  # the subscription is known: no Stripe call
    assert post("invoice.payment_succeeded") == "processed"
    assert post("invoice.paid") == "processed"  # the same payment: audited once
    assert post("customer.updated") == "processed"
    assert post("customer.subscription.updated") == "processed"
    assert subscription() == ("active", "pro", "monthly", True, "2026-12-20T14:00:00+00:00")
    assert post("customer.subscription.deleted") == "processed"
    assert subscription()[0] == "canceled"

    with app.app_context():
        actions = list(
            db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user_id).order_by(AuditLog.id))
        )
        assert actions == [
            "subscription.activated",
            "checkout.completed",
            "payment.succeeded",
            "customer.email_changed",
            "subscription.cancel_scheduled",
            "subscription.canceled",
        ]
        user = db.session.get(User, user_id)
        assert (user.billing_email, user.name) == ("jenny.rosen@example.com", "Jenny Rosen")
        assert user.email == "jennyrosen@example.com"  # the login email is never Stripe's
        kinds = list(db.session.scalars(sa.select(MailOutbox.kind).order_by(MailOutbox.id)))
        assert kinds == ["subscription_activated", "cancellation_scheduled", "subscription_ended"]
        assert db.session.scalar(sa.select(sa.func.count(StripeEvent.id))) == 7


def test_out_of_order_docs_events_end_in_the_same_state(app, client):
    """deleted before updated before created: the newest event wins, older ones are skipped."""
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER)
    secret = app.config["STRIPE_WEBHOOK_SECRET"]
    for name in ("customer.subscription.deleted", "customer.subscription.updated", "customer.subscription.created"):
        assert post_event(client, load(name), secret).status_code == 200
    with app.app_context():
        row = db.session.scalar(sa.select(UserSubscription))
        assert row.status == "canceled" and row.last_event_at == 1797775201


def test_payment_failed_docs_event_audits_and_mails_once(app, client, smtp_sink):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER)
    secret = app.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.subscription.created"), secret)
    failed = load("invoice.payment_failed")
    assert post_event(client, failed, secret).status_code == 200
    failed["id"] = "evt_same_failure_other_event"  # a second event describing the same failed attempt
    assert post_event(client, failed, secret).status_code == 200
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "payment.failed")) == 1
    assert eventually(lambda: "Action needed: your payment failed" in smtp_sink.subjects("jennyrosen@example.com"))
    subjects = smtp_sink.subjects("jennyrosen@example.com")
    assert subjects.count("Action needed: your payment failed") == 1
