"""The admin's actions: replay a failed webhook event, look a user up, re-sync a user from Stripe."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, StripeEvent, UserSubscription
from tests.admin.conftest import add_audit, add_subscription
from tests.conftest import csrf_token_from
from tests.factories import UserFactory
from tests.webhooks.test_endpoint import failing_event


def event_row(app, event_id="evt_bad") -> tuple[str, int, str | None]:
    with app.app_context():
        row = db.session.get(StripeEvent, event_id)
        return row.status, row.attempts, row.error


def replay(client, event_id="evt_bad"):
    token = csrf_token_from(client.get("/admin").get_data(as_text=True))
    return client.post(f"/admin/events/{event_id}/replay", data={"csrf_token": token}, follow_redirects=True)


def test_a_failed_event_has_a_replay_button_that_reports_a_second_failure_then_a_success(seeded, admin_client):
    failing_event(seeded, admin_client)
    html = admin_client.get("/admin").get_data(as_text=True)
    row = re.search(r'data-testid="event-row-evt_bad">(.*?)</tr>', html, re.S).group(1)
    assert "failed" in row and "belongs to another user" in row and 'data-testid="replay-evt_bad"' in row

    # Replayed before the cause is fixed: it fails again, the page says so, the row keeps the error.
    page = replay(admin_client).get_data(as_text=True)
    assert "Replay of evt_bad failed again" in page
    assert event_row(seeded)[:2] == ("failed", 2)

    # The operator repairs the customer mapping; the replay now applies the event.
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = NULL WHERE email = 'intruder@example.com'"))
        db.session.execute(
            sa.text("UPDATE users SET stripe_customer_id = 'cus_intruder' WHERE email = 'owner@example.com'")
        )
        db.session.commit()
    page = replay(admin_client).get_data(as_text=True)
    assert "Replayed evt_bad (customer.subscription.updated): processed." in page
    assert event_row(seeded) == ("processed", 3, None)
    assert 'data-testid="replay-evt_bad"' not in page  # processed events have no button
    with seeded.app_context():
        assert db.session.scalar(sa.select(UserSubscription.status)) == "canceled"
        actions = list(db.session.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))
        assert actions.count("admin.event_replayed") == 2 and "subscription.canceled" in actions


def test_replaying_an_unknown_event_says_so(admin_client):
    page = replay(admin_client, "evt_missing").get_data(as_text=True)
    assert "No recorded event evt_missing." in page


def test_user_lookup_shows_subscriptions_events_and_audit_trail(seeded, admin_client):
    now = datetime.now(UTC)
    with seeded.app_context():
        user = UserFactory(email="trader@example.com", stripe_customer_id="cus_trader", name="Ada Trader")
        other = UserFactory(email="other@example.com", stripe_customer_id="cus_other")
        add_subscription(user, "pro", "yearly", "active", started=20)
        add_audit(user, "subscription.activated", 20, plan="pro", billing_cycle="yearly", status="active")
        add_audit(other, "subscription.activated", 3, plan="starter", billing_cycle="monthly", status="active")
        for event_id, etype, obj in (
            ("evt_inv", "invoice.payment_succeeded", {"id": "in_1", "object": "invoice", "customer": "cus_trader"}),
            ("evt_cus", "customer.updated", {"id": "cus_trader", "object": "customer"}),
            ("evt_not_mine", "invoice.payment_failed", {"id": "in_2", "object": "invoice", "customer": "cus_other"}),
        ):
            db.session.add(
                StripeEvent(
                    id=event_id,
                    type=etype,
                    stripe_created=now,
                    received_at=now,
                    status="processed",
                    attempts=1,
                    payload={"id": event_id, "type": etype, "data": {"object": obj}},
                )
            )
        db.session.commit()
    response = admin_client.get("/admin/users?email=Trader@Example.com")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'data-testid="user-email">trader@example.com<' in html
    assert 'data-testid="user-customer">cus_trader<' in html
    subscriptions = re.search(r'data-testid="user-subscriptions">(.*?)</table>', html, re.S).group(1)
    assert "Pro" in subscriptions and "yearly" in subscriptions and "active" in subscriptions
    assert "evt_inv" in html and "evt_cus" in html and "evt_not_mine" not in html
    audit = re.search(r'data-testid="user-audit">(.*?)</table>', html, re.S).group(1)
    assert "subscription.activated" in audit and "starter" not in audit


def test_looking_up_an_unknown_email_goes_back_with_a_message(admin_client):
    page = admin_client.get("/admin/users?email=nobody@example.com", follow_redirects=True).get_data(as_text=True)
    assert "No user with the email nobody@example.com." in page and "Billing overview" in page


def test_sync_from_stripe_repairs_drift_and_invalidates_entitlements(seeded, admin_client, stripe_emulator, redis_url):
    """A subscription that exists in Stripe but not locally appears after the admin's sync."""
    import redis

    client = stripe_emulator.client()
    with seeded.app_context():
        user = UserFactory(email="drift@example.com")
        customer = client.v1.customers.create(
            params={"email": "drift@example.com", "metadata": {"user_id": str(user.id)}}
        )
        user.stripe_customer_id = customer.id
        db.session.commit()
        user_id = user.id
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": "price_starter_monthly", "quantity": 1}],
            "success_url": "http://127.0.0.1:9/ok",
            "cancel_url": "http://127.0.0.1:9/no",
        }
    )
    stripe_emulator.complete_checkout(session.id)  # paid in Stripe; no webhook reaches the app
    store = redis.Redis.from_url(redis_url)
    store.set(f"entitlements:{user_id}", "{}")
    token = csrf_token_from(admin_client.get("/admin/users?email=drift@example.com").get_data(as_text=True))
    page = admin_client.post(
        f"/admin/users/{user_id}/sync", data={"csrf_token": token}, follow_redirects=True
    ).get_data(as_text=True)
    assert "Synced drift@example.com from Stripe:" in page
    assert store.get(f"entitlements:{user_id}") is None
    with seeded.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count(UserSubscription.id)).where(UserSubscription.user_id == user_id))
            == 1
        )
