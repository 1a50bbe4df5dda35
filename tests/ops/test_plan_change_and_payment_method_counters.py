"""billing_plan_changes_total{direction} and billing_payment_method_updates_total move with the webhooks that
change a plan or a default payment method — and only after the change is committed."""

from __future__ import annotations

import time

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, UserSubscription
from app.services import metrics
from tests.factories import UserFactory
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import event


def counter(metric, **labels) -> float:
    return (metric.labels(**labels) if labels else metric)._value.get()


def subscription_object(price: str) -> dict:
    return {
        "id": "sub_counted",
        "object": "subscription",
        "customer": "cus_counted",
        "status": "active",
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "items": {
            "data": [
                {
                    "id": "si_1",
                    "price": {"id": price},
                    "current_period_start": 1_900_000_000,
                    "current_period_end": 1_902_592_000,
                }
            ]
        },
    }


def test_each_plan_change_is_counted_by_direction(seeded, client):
    with seeded.app_context():
        user = UserFactory(email="mover@example.com", stripe_customer_id="cus_counted")
        starter = db.session.scalar(sa.text("SELECT id FROM subscription_plans WHERE name = 'starter'"))
        db.session.add(
            UserSubscription(
                user_id=user.id,
                plan_id=starter,
                billing_cycle="monthly",
                status="active",
                stripe_subscription_id="sub_counted",
                last_event_at=1,
            )
        )
        db.session.commit()
    secret = seeded.config["STRIPE_WEBHOOK_SECRET"]
    before = {d: counter(metrics.BILLING_PLAN_CHANGES, direction=d) for d in metrics.PLAN_CHANGE_DIRECTIONS}
    created = int(time.time())
    moves = [
        ("price_pro_monthly", "upgrade"),
        ("price_pro_yearly", "cycle_change"),
        ("price_starter_yearly", "downgrade"),
    ]
    for step, (price, _direction) in enumerate(moves):
        response = post_event(
            client,
            event(
                f"evt_move_{step}", "customer.subscription.updated", subscription_object(price), created=created + step
            ),
            secret,
        )
        assert response.status_code == 200, response.get_json()
    # A redelivery changes nothing and counts nothing.
    post_event(
        client,
        event("evt_move_0", "customer.subscription.updated", subscription_object("price_pro_monthly"), created=created),
        secret,
    )
    after = {d: counter(metrics.BILLING_PLAN_CHANGES, direction=d) for d in metrics.PLAN_CHANGE_DIRECTIONS}
    assert {d: after[d] - before[d] for d in after} == {"upgrade": 1, "cycle_change": 1, "downgrade": 1}
    with seeded.app_context():
        assert (
            db.session.scalar(
                sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "subscription.plan_changed")
            )
            == 3
        )


def customer_updated(event_id: str, new_pm: str | None, previous: dict | None, created: int) -> dict:
    body = event(
        event_id,
        "customer.updated",
        {
            "id": "cus_counted",
            "object": "customer",
            "email": "pm@example.com",
            "name": None,
            "invoice_settings": {"default_payment_method": new_pm},
        },
        created=created,
    )
    if previous is not None:
        body["data"]["previous_attributes"] = previous
    return body


def test_a_new_default_payment_method_is_counted_and_audited(seeded, client):
    with seeded.app_context():
        UserFactory(email="pm@example.com", stripe_customer_id="cus_counted")
    secret = seeded.config["STRIPE_WEBHOOK_SECRET"]
    before = counter(metrics.BILLING_PAYMENT_METHOD_UPDATES)
    now = int(time.time())
    changed = customer_updated("evt_pm_1", "pm_new", {"invoice_settings": {"default_payment_method": "pm_old"}}, now)
    renamed = customer_updated("evt_pm_2", "pm_new", {"name": "Old name"}, now + 1)  # another field changed
    for body in (changed, renamed, changed):  # the third is a redelivery
        assert post_event(client, body, secret).status_code == 200
    assert counter(metrics.BILLING_PAYMENT_METHOD_UPDATES) - before == 1
    with seeded.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "payment_method.updated"))
            == 1
        )


def test_the_first_card_set_by_checkout_is_not_an_update(seeded, stripe_emulator, webhooks_to_app):
    """Stripe's own customer.updated (previous_attributes: default_payment_method None) after a first payment."""
    stripe = stripe_emulator.client()
    with seeded.app_context():
        user = UserFactory(email="first@example.com")
        customer = stripe.v1.customers.create(
            params={"email": "first@example.com", "metadata": {"user_id": str(user.id)}}
        )
        user.stripe_customer_id = customer.id
        db.session.commit()
    before = counter(metrics.BILLING_PAYMENT_METHOD_UPDATES)
    session = stripe.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": "price_pro_monthly", "quantity": 1}],
            "success_url": "http://127.0.0.1:9/ok",
            "cancel_url": "http://127.0.0.1:9/no",
        }
    )
    stripe_emulator.complete_checkout(session.id)
    stripe_emulator.flush()
    with seeded.app_context():  # the app did receive and process Stripe's customer.updated
        assert (
            db.session.scalar(
                sa.text("SELECT count(*) FROM stripe_events WHERE type = 'customer.updated' AND status = 'processed'")
            )
            >= 1
        )
    assert counter(metrics.BILLING_PAYMENT_METHOD_UPDATES) == before
