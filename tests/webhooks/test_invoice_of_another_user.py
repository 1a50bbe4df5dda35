"""An invoice of one customer naming another user's subscription is refused as the subscription event is (422, kept
failed, replayable), and the payment-failed mail never falls back to a broken sentence."""

import time

import pytest
import sqlalchemy as sa
from flask import render_template

from app.extensions import db
from app.models import AuditLog, MailOutbox, StripeEvent
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import owner_and_intruder

URL = "/api/v1/billing/webhooks/stripe"


def invoice_event(event_id: str, type_: str, customer: str = "cus_intruder", subscription: str | None = "sub_shared"):
    parent = (
        {"type": "subscription_details", "subscription_details": {"subscription": subscription}}
        if subscription
        else None
    )
    invoice = {
        "id": "in_mixed",
        "object": "invoice",
        "customer": customer,
        "status": "open",
        "amount_due": 1999,
        "amount_paid": 0 if type_ == "invoice.payment_failed" else 1999,
        "currency": "usd",
        "attempt_count": 1,
        "next_payment_attempt": int(time.time()) + 3 * 86400,
        "parent": parent,
    }
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
        "data": {"object": invoice},
    }


@pytest.mark.parametrize("type_", ["invoice.payment_failed", "invoice.paid", "invoice.payment_succeeded"])
def test_an_invoice_naming_another_users_subscription_is_refused_and_kept_failed(seeded, client, type_):
    owner_and_intruder(seeded, "starter")
    response = post_event(client, invoice_event("evt_mixed", type_), seeded.config["STRIPE_WEBHOOK_SECRET"])
    assert (response.status_code, response.get_json()["error"]) == (422, "unprocessable_event")
    with seeded.app_context():
        row = db.session.get_one(StripeEvent, "evt_mixed")
        assert row.status == "failed" and "belongs to another user" in (row.error or "")
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action.like("payment.%"))) == 0
        assert db.session.scalar(sa.select(sa.func.count(MailOutbox.id))) == 0
    # Stripe's redelivery (or a replay) is refused again: nothing is applied until the mapping is repaired.
    again = post_event(client, invoice_event("evt_mixed", type_), seeded.config["STRIPE_WEBHOOK_SECRET"])
    assert again.status_code == 422


def test_the_owners_own_invoice_is_still_processed(seeded, client):
    owner_and_intruder(seeded, "starter")
    body = invoice_event("evt_own", "invoice.paid", customer="cus_owner")
    response = post_event(client, body, seeded.config["STRIPE_WEBHOOK_SECRET"])
    assert response.status_code == 200 and response.get_json()["status"] == "processed"


def test_payment_failed_wording_with_and_without_a_plan(app):
    context = {
        "amount": "$19.99",
        "retrying": True,
        "has_access": None,
        "next_attempt": "December 7, 2026",
        "billing_url": "https://example.test/billing",
    }
    with app.test_request_context():
        without = render_template("mail/payment_failed.txt", user=None, plan=None, **context)
        with_plan = render_template("mail/payment_failed.txt", user=None, plan="Pro", **context)
    first_line = without.splitlines()[2]
    assert first_line == "We could not collect your payment of $19.99 for your Smart Strategies Builder subscription."
    assert "None" not in without and " paid." not in without
    assert with_plan.splitlines()[2] == (
        "We could not collect your payment of $19.99 for your Smart Strategies Builder Pro plan."
    )
