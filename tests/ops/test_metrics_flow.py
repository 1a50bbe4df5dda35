"""After a real life cycle (Checkout, webhooks, cancel, a failed renewal, a Stripe error), /metrics shows every
billing counter moved — counted by the code paths themselves, not by the test."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import User, UserSubscription
from app.services import DomainError
from app.services.checkout import fulfil_checkout, start_checkout
from app.services.subscriptions import set_cancel_at_period_end
from tests.factories import UserFactory
from tests.ops.test_metrics import scrape


def subscribe(app, emulator, email, card):
    with app.test_request_context():
        user = UserFactory(email=email)
        checkout = start_checkout(
            user.id,
            "pro",
            "monthly",
            success_url="http://t/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://t/p",
        )
    emulator.complete_checkout(checkout.session_id, card=card)
    return email


def test_a_life_cycle_moves_every_billing_counter(seeded, client, stripe_emulator, webhooks_to_app):
    before = scrape(client)
    stripe_emulator.chaos(duplicate=1)  # every event twice: the idempotency counter must move too
    subscribe(seeded, stripe_emulator, "stays@example.com", "4242424242424242")
    subscribe(seeded, stripe_emulator, "fails@example.com", "4000000000000341")
    stripe_emulator.flush()
    with seeded.test_request_context():
        user = db.session.scalar(sa.select(User).where(User.email == "stays@example.com"))
        set_cancel_at_period_end(user, True)
    stripe_emulator.advance(days=31)  # the 0341 card fails its renewal; the canceled one ends
    stripe_emulator.flush()
    with seeded.test_request_context(), pytest.raises(DomainError):
        fulfil_checkout("cs_test_does_not_exist", 1)  # Stripe answers 404: a counted Stripe API error
    after = scrape(client)

    def moved(name):
        return after.get(name, 0) - before.get(name, 0)

    assert moved("billing_checkout_sessions_created_total") == 2
    assert moved("billing_checkout_sessions_completed_total") == 2
    assert moved('billing_subscriptions_activated_total{plan="pro"}') == 2
    assert moved('billing_subscriptions_canceled_total{plan="pro"}') == 1
    assert moved("billing_payments_succeeded_total") >= 2
    assert moved("billing_payments_failed_total") == 1
    assert moved('stripe_webhook_events_total{outcome="processed",type="customer.subscription.created"}') == 2
    assert moved("stripe_webhook_idempotency_hits_total") > 0
    assert moved("stripe_webhook_processing_seconds_count") > 0
    assert moved("stripe_api_request_seconds_count") > 0
    assert moved("stripe_api_errors_total") >= 1
    with seeded.app_context():
        statuses = sorted(db.session.scalars(sa.select(UserSubscription.status)))
    assert statuses == ["canceled", "past_due"]
