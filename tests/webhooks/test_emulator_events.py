"""Every handler with events the emulator produces and delivers over HTTP to the live app, signed."""

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, StripeEvent, User, UserSubscription
from app.services.checkout import start_checkout
from app.services.entitlements import get_entitlements
from tests.eventually import eventually
from tests.factories import UserFactory


def subscribe(app, emulator, card="4242424242424242", plan="pro", cycle="monthly"):
    with app.test_request_context():
        user = UserFactory(email="trader@example.com")
        checkout = start_checkout(
            user.id,
            plan,
            cycle,
            success_url="http://app.test/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://app.test/pricing",
        )
        user_id = user.id
    emulator.complete_checkout(checkout.session_id, card=card)
    emulator.flush()
    return user_id


def state(app, user_id):
    with app.app_context():
        user = db.session.get(User, user_id)
        rows = db.session.scalars(sa.select(UserSubscription).where(UserSubscription.user_id == user_id)).all()
        actions = list(
            db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user_id).order_by(AuditLog.id))
        )
        events = {e.type: e.status for e in db.session.scalars(sa.select(StripeEvent))}
        return user, [(r.plan.name, r.status, r.cancel_at_period_end) for r in rows], actions, events


def test_checkout_to_active_through_webhooks(seeded, stripe_emulator, webhooks_to_app, smtp_sink):
    user_id = subscribe(seeded, stripe_emulator)
    user, rows, actions, events = state(seeded, user_id)
    assert rows == [("pro", "active", False)]
    assert events["checkout.session.completed"] == "processed"
    assert events["customer.subscription.created"] == "processed"
    assert events["invoice.paid"] == "processed" and events["invoice.payment_succeeded"] == "processed"
    assert actions.count("subscription.activated") == 1 and actions.count("payment.succeeded") == 1
    assert all(d["status_code"] == 200 for d in stripe_emulator.deliveries())
    assert eventually(lambda: smtp_sink.subjects("trader@example.com") == ["Welcome to Smart Strategies Builder Pro"])
    with seeded.app_context():
        assert get_entitlements(user_id)["api_access"] is True


def test_cancel_in_the_portal_then_the_period_ends(seeded, stripe_emulator, webhooks_to_app, smtp_sink):
    user_id = subscribe(seeded, stripe_emulator)
    client = stripe_emulator.client()
    with seeded.app_context():
        sub_id = db.session.scalar(sa.select(UserSubscription.stripe_subscription_id))
    client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})  # as the portal does
    stripe_emulator.flush()
    _, rows, actions, _ = state(seeded, user_id)
    assert rows == [("pro", "active", True)] and "subscription.cancel_scheduled" in actions
    with seeded.app_context():
        assert get_entitlements(user_id)["api_access"] is True  # until the period ends

    stripe_emulator.advance(days=32)
    stripe_emulator.flush()
    _, rows, actions, events = state(seeded, user_id)
    assert rows == [("pro", "canceled", True)]
    assert events["customer.subscription.deleted"] == "processed"
    assert actions.count("subscription.canceled") == 1
    with seeded.app_context():
        assert "api_access" not in get_entitlements(user_id)  # Free again, without any manual cache step
    assert eventually(lambda: smtp_sink.subjects("trader@example.com")[-1:] == ["Your Pro plan has ended"])


def test_failing_renewal_goes_past_due_with_one_dunning_mail(seeded, stripe_emulator, webhooks_to_app, smtp_sink):
    user_id = subscribe(seeded, stripe_emulator, card="4000000000000341")
    stripe_emulator.advance(days=31)
    stripe_emulator.flush()
    _, rows, actions, events = state(seeded, user_id)
    assert rows == [("pro", "past_due", False)]
    assert events["invoice.payment_failed"] == "processed"
    assert actions.count("payment.failed") == 1
    assert eventually(lambda: smtp_sink.subjects("trader@example.com").count("Action needed: your payment failed") == 1)
    with seeded.app_context():
        assert get_entitlements(user_id)["api_access"] is True  # past_due keeps access during retries


def test_customer_updated_keeps_the_billing_email_and_name_in_step(seeded, stripe_emulator, webhooks_to_app):
    user_id = subscribe(seeded, stripe_emulator)
    with seeded.app_context():
        customer_id = db.session.get(User, user_id).stripe_customer_id
    stripe_emulator.client().v1.customers.update(
        customer_id, params={"email": "Renamed@Example.com", "name": "Renamed Trader"}
    )
    stripe_emulator.flush()
    user, _, actions, events = state(seeded, user_id)
    assert events["customer.updated"] == "processed"
    assert (user.billing_email, user.name) == ("Renamed@Example.com", "Renamed Trader")
    assert user.email == "trader@example.com"  # the login email changes only by the link mailed to a new address
    assert "customer.email_changed" in actions and "user.email_changed" not in actions


def test_duplicated_and_shuffled_deliveries_end_in_stripes_state(seeded, stripe_emulator, webhooks_to_app):
    stripe_emulator.chaos(duplicate=1, shuffle=1)
    user_id = subscribe(seeded, stripe_emulator, plan="starter", cycle="yearly")
    _, rows, actions, _ = state(seeded, user_id)
    assert rows == [("starter", "active", False)]
    assert actions.count("subscription.activated") == 1
    assert any(d["duplicate"] for d in stripe_emulator.deliveries())
