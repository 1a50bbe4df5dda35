"""The app is right with only the six events of the deployment guide: a whole life cycle — checkout, failed payment,
card update, renewal, plan change, cancellation — where the emulator delivers nothing else (to an endpoint
registered as the guide says), every change made on Stripe's side (its hosted pages), never by the app's own
services; then `flask stripe sync --all` finds nothing to repair."""

from __future__ import annotations

import requests
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, StripeEvent, User, UserSubscription
from app.services.checkout import start_checkout
from app.services.webhooks import API_VERSION
from tests.factories import UserFactory
from tests.test_stripe_cli import SIX_EVENTS


def state(app, user_id: int):
    with app.app_context():
        rows = db.session.execute(sa.select(UserSubscription).where(UserSubscription.user_id == user_id)).scalars()
        subscriptions = [
            (r.plan.name, r.billing_cycle, r.status, r.cancel_at_period_end, r.current_period_end is not None)
            for r in rows
        ]
        actions = list(db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user_id)))
        db.session.remove()
        return subscriptions, actions


class Portal:
    """The customer in the emulator's hosted Customer Portal."""

    def __init__(self, emulator, customer: str):
        session = emulator.client().v1.billing_portal.sessions.create(params={"customer": customer})
        self.url, self.emulator = session.url, emulator

    def post(self, action: str, **form) -> None:
        response = requests.post(f"{self.url}/{action}", data=form, allow_redirects=False, timeout=10)
        assert response.status_code in (302, 303), response.text
        self.emulator.flush()

    def new_card(self, number: str) -> None:
        self.post("payment_method", card_number=number, card_expiry="12 / 34", card_cvc="123", card_name="T")


def test_the_whole_life_cycle_on_the_six_events(seeded, stripe_emulator, live_server, runner, smtp_sink):
    client = stripe_emulator.client()
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": live_server.webhook_url, "enabled_events": SIX_EVENTS, "api_version": API_VERSION}
    )
    previous_secret = seeded.config["STRIPE_WEBHOOK_SECRET"]
    seeded.config["STRIPE_WEBHOOK_SECRET"] = endpoint.secret
    try:
        with seeded.test_request_context():
            user = UserFactory(email="six@example.com")
            user_id = user.id
            checkout = start_checkout(
                user_id,
                "pro",
                "monthly",
                cancel_url="http://app.test/pricing",
                success_url="http://app.test/s?session_id={CHECKOUT_SESSION_ID}",
            )
        # 1. checkout, with a card that pays once and is declined afterwards
        stripe_emulator.complete_checkout(checkout.session_id, card="4000000000000341")
        stripe_emulator.flush()
        assert state(seeded, user_id)[0] == [("pro", "monthly", "active", False, True)]
        with seeded.app_context():
            customer = db.session.get(User, user_id).stripe_customer_id
            subscription_id = db.session.scalar(sa.select(UserSubscription.stripe_subscription_id))
            db.session.remove()
        portal = Portal(stripe_emulator, customer)

        stripe_emulator.advance(days=32)  # 2. failed payment at the renewal
        stripe_emulator.flush()
        subscriptions, actions = state(seeded, user_id)
        assert subscriptions == [("pro", "monthly", "past_due", False, True)] and "payment.failed" in actions

        portal.new_card("4242424242424242")  # 3. card update: the portal pays the open invoice with it
        subscriptions, actions = state(seeded, user_id)
        assert subscriptions == [("pro", "monthly", "active", False, True)]
        assert actions.count("payment_method.updated") == 1 and actions.count("payment.succeeded") == 2

        stripe_emulator.advance(days=32)  # 4. renewal
        stripe_emulator.flush()
        subscriptions, actions = state(seeded, user_id)
        assert subscriptions == [("pro", "monthly", "active", False, True)] and actions.count("payment.succeeded") == 3

        portal.post("update", subscription=subscription_id, price="price_starter_yearly")  # 5. plan change
        # Starter yearly costs less a year than Pro monthly: the portal schedules it for the period end.
        assert state(seeded, user_id)[0] == [("pro", "monthly", "active", False, True)]
        stripe_emulator.advance(days=32)
        stripe_emulator.flush()
        subscriptions, actions = state(seeded, user_id)
        assert subscriptions == [("starter", "yearly", "active", False, True)]
        assert "subscription.plan_changed" in actions

        portal.post("cancel", subscription=subscription_id)  # 6. cancel at period end, then the end
        assert state(seeded, user_id)[0] == [("starter", "yearly", "active", True, True)]
        stripe_emulator.advance(days=370)
        stripe_emulator.flush()
        assert state(seeded, user_id)[0] == [("starter", "yearly", "canceled", True, True)]
    finally:
        seeded.config["STRIPE_WEBHOOK_SECRET"] = previous_secret

    deliveries = stripe_emulator.deliveries()
    assert deliveries and all(d["status_code"] == 200 for d in deliveries)
    with seeded.app_context():
        received = set(db.session.scalars(sa.select(StripeEvent.type)))
        statuses = set(db.session.scalars(sa.select(StripeEvent.status)))
        db.session.remove()
    assert received == set(SIX_EVENTS) and statuses == {"processed"}
    result = runner.invoke(args=["stripe", "sync", "--all"])
    assert result.exit_code == 0 and "Synced 1 customer(s); 0 had drifted." in result.output, result.output
