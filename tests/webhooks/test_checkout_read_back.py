"""A completed Checkout reads its subscription back from Stripe only when no `customer.subscription.created` will
bring it: the emulator's own events of a real Checkout, posted signed to the endpoint in either order, with the
Stripe calls counted by the app's `stripe_api_request_seconds` histogram. Whatever the order, the user ends with
one subscription, the one Stripe holds, activated (and mailed) once."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import REGISTRY

from app.extensions import db
from app.models import AuditLog, MailOutbox, UserSubscription
from app.services.checkout import start_checkout
from tests.factories import UserFactory
from tests.webhooks.signing import post_event


def stripe_calls() -> float:
    return REGISTRY.get_sample_value("stripe_api_request_seconds_count") or 0.0


def checkout_events(app, emulator, email: str) -> tuple[int, dict[str, dict]]:
    """A user who paid a Checkout in the emulator (nothing delivered), and the events it made, by type."""
    with app.test_request_context():
        user_id = UserFactory(email=email).id
        checkout = start_checkout(
            user_id,
            "pro",
            "monthly",
            success_url="http://app.test/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://app.test/pricing",
        )
        db.session.remove()
    session = emulator.complete_checkout(checkout.session_id)
    events = emulator.call("GET", "/_emulator/state")["objects"]["events"].values()
    mine = {e["type"]: e for e in events if session["customer"] in (e["data"]["object"].get("customer"),)}
    return user_id, mine


def post(app, client, event: dict) -> float:
    """Post the event signed; the Stripe calls its handling made."""
    before = stripe_calls()
    response = post_event(client, event, app.config["STRIPE_WEBHOOK_SECRET"])
    assert response.status_code == 200, response.get_json()
    return stripe_calls() - before


def subscriptions(app, user_id: int) -> tuple[list[tuple[str, str]], int, int]:
    """The user's rows (plan, status), activations audited and activation mails queued."""
    with app.app_context():
        rows = db.session.scalars(sa.select(UserSubscription).where(UserSubscription.user_id == user_id)).all()
        found = [(row.plan.name, row.status) for row in rows]
        activated = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditLog)
            .where(AuditLog.user_id == user_id, AuditLog.action == "subscription.activated")
        )
        mails = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(MailOutbox)
            .where(MailOutbox.user_id == user_id, MailOutbox.kind == "subscription_activated")
        )
        db.session.remove()
        return found, activated, mails


def test_created_first_then_checkout_reads_nothing_from_stripe(seeded, client, stripe_emulator):
    user_id, events = checkout_events(seeded, stripe_emulator, "first@example.com")
    assert post(seeded, client, events["customer.subscription.created"]) == 0
    assert post(seeded, client, events["invoice.payment_succeeded"]) == 0
    assert post(seeded, client, events["checkout.session.completed"]) == 0
    assert subscriptions(seeded, user_id) == ([("pro", "active")], 1, 1)


def test_checkout_before_its_created_event_waits_for_it_without_reading_stripe(seeded, client, stripe_emulator):
    earlier_id, earlier = checkout_events(seeded, stripe_emulator, "earlier@example.com")
    post(seeded, client, earlier["customer.subscription.created"])  # this endpoint receives created events
    user_id, events = checkout_events(seeded, stripe_emulator, "later@example.com")
    assert post(seeded, client, events["checkout.session.completed"]) == 0
    assert post(seeded, client, events["invoice.payment_succeeded"]) == 0
    assert subscriptions(seeded, user_id) == ([], 0, 0)  # the success page syncs for the person meanwhile
    assert post(seeded, client, events["customer.subscription.created"]) == 0
    assert subscriptions(seeded, user_id) == ([("pro", "active")], 1, 1)
    assert subscriptions(seeded, earlier_id) == ([("pro", "active")], 1, 1)


def test_an_endpoint_of_the_six_events_reads_the_subscription_back_at_checkout(seeded, client, stripe_emulator):
    user_id, events = checkout_events(seeded, stripe_emulator, "six@example.com")
    assert post(seeded, client, events["checkout.session.completed"]) >= 1  # no created event was ever received
    assert subscriptions(seeded, user_id) == ([("pro", "active")], 1, 1)
    # A created event delivered after all (the endpoint changed) finds the row and changes nothing.
    post(seeded, client, events["customer.subscription.created"])
    assert subscriptions(seeded, user_id) == ([("pro", "active")], 1, 1)


def test_a_created_event_that_made_no_row_is_read_back_at_checkout(seeded, client, stripe_emulator):
    user_id, events = checkout_events(seeded, stripe_emulator, "unlinked@example.com")
    with seeded.app_context():  # the customer is not linked yet, and its metadata names nobody
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = NULL WHERE id = :id"), {"id": user_id})
        db.session.commit()
        db.session.remove()
    customer = events["checkout.session.completed"]["data"]["object"]["customer"]
    stripe_emulator.client().v1.customers.update(customer, params={"metadata": {"user_id": ""}})
    post(seeded, client, events["customer.subscription.created"])
    assert subscriptions(seeded, user_id) == ([], 0, 0)
    assert post(seeded, client, events["checkout.session.completed"]) >= 1  # links the customer, then reads
    assert subscriptions(seeded, user_id) == ([("pro", "active")], 1, 1)
