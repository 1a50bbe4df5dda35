"""`flask stripe …` against the emulator: catalog, webhook endpoint, reconcile with drift, replay."""

import sqlalchemy as sa
import stripe

from app.extensions import db
from app.models import AuditLog, StripeEvent, UserSubscription
from app.services.checkout import start_checkout
from app.services.stripe_admin import EXTRA_EVENTS
from app.services.webhooks import API_VERSION, HANDLERS
from tests.factories import UserFactory

#: Section 1.2's list, in its order.
SIX_EVENTS = [
    "checkout.session.completed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "customer.updated",
]


def paid_user(app, emulator, email="trader@example.com"):
    with app.test_request_context():
        user = UserFactory(email=email)
        checkout = start_checkout(
            user.id,
            "pro",
            "monthly",
            success_url="http://t/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://t/p",
        )
    emulator.complete_checkout(checkout.session_id)
    return email


def test_create_catalog_is_idempotent_and_prints_the_env_lines(seeded, runner, stripe_emulator):
    result = runner.invoke(args=["stripe", "create-catalog"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("STRIPE_PRICE_")]
    assert lines == [
        "STRIPE_PRICE_FREE_MONTHLY=price_free_monthly",
        "STRIPE_PRICE_STARTER_MONTHLY=price_starter_monthly",
        "STRIPE_PRICE_STARTER_YEARLY=price_starter_yearly",
        "STRIPE_PRICE_PRO_MONTHLY=price_pro_monthly",
        "STRIPE_PRICE_PRO_YEARLY=price_pro_yearly",
    ]
    stripe_emulator.client().v1.prices.update("price_pro_yearly", params={"lookup_key": "pro_yearly_old"})
    result = runner.invoke(args=["stripe", "create-catalog"])
    new_line = [line for line in result.stdout.splitlines() if line.startswith("STRIPE_PRICE_PRO_YEARLY=")][0]
    assert new_line != "STRIPE_PRICE_PRO_YEARLY=price_pro_yearly"  # a missing price is created
    price = stripe_emulator.client().v1.prices.retrieve(new_line.split("=", 1)[1])
    assert (price.unit_amount, price.recurring.interval, price.lookup_key) == (47999, "year", "pro_yearly")


def test_create_catalog_names_the_products_as_the_guide(seeded, runner, stripe_emulator):
    """A fresh account (no catalog): the products are "Free Plan", "Starter Plan", "Pro Plan"."""
    client = stripe_emulator.client()
    for price in client.v1.prices.list(params={"limit": 100}).data:
        client.v1.prices.update(price.id, params={"lookup_key": f"old_{price.id}", "active": False})
    for product in client.v1.products.list(params={"limit": 100}).data:
        client.v1.products.update(product.id, params={"active": False})
    result = runner.invoke(args=["stripe", "create-catalog"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in client.v1.products.list(params={"active": True, "limit": 100}).data)
    assert names == ["Free Plan", "Pro Plan", "Starter Plan"]
    emulator_names = sorted(p.name for p in client.v1.products.list(params={"active": False, "limit": 100}).data)
    assert emulator_names == ["Free Plan", "Pro Plan", "Starter Plan"]  # the emulator's own catalog too


def test_webhook_endpoint_is_created_once_with_the_guides_events(seeded, runner, stripe_emulator):
    url = "https://billing.example.com/api/v1/billing/webhooks/stripe"
    result = runner.invoke(args=["stripe", "webhook-endpoint", "--url", url])
    assert result.exit_code == 0, result.output
    assert "STRIPE_WEBHOOK_SECRET=whsec_" in result.output
    [endpoint] = stripe_emulator.client().v1.webhook_endpoints.list().data
    assert endpoint.url == url and endpoint.api_version == API_VERSION == stripe.api_version
    assert endpoint.enabled_events == SIX_EVENTS + list(EXTRA_EVENTS)
    assert set(EXTRA_EVENTS) <= set(HANDLERS)
    assert f"api_version: {API_VERSION}" in result.output
    for event_type, reason in EXTRA_EVENTS.items():
        assert f"extra: {event_type} — {reason}" in result.output
    again = runner.invoke(args=["stripe", "webhook-endpoint", "--url", url])
    assert again.exit_code == 0 and "already registers" in again.output
    bad = runner.invoke(args=["stripe", "webhook-endpoint", "--url", "billing.example.com"])
    assert bad.exit_code == 1 and "absolute http(s) URL" in bad.output


def test_sync_repairs_drift_and_audits_it(seeded, runner, stripe_emulator):
    email = paid_user(seeded, stripe_emulator)  # no webhook, no success page: the copy has drifted
    result = runner.invoke(args=["stripe", "sync", "--user", email])
    assert result.exit_code == 0, result.output
    assert f"✓ repaired {email}" in result.output and "subscription.activated" in result.output
    with seeded.app_context():
        assert db.session.scalar(sa.select(UserSubscription.status)) == "active"
        assert (
            db.session.scalar(
                sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "reconcile.drift_repaired")
            )
            == 1
        )
    again = runner.invoke(args=["stripe", "sync", "--all"])
    assert again.exit_code == 0 and "Synced 1 customer(s); 0 had drifted." in again.output


def test_sync_needs_a_scope_and_a_known_user(seeded, runner):
    assert runner.invoke(args=["stripe", "sync"]).exit_code == 2
    result = runner.invoke(args=["stripe", "sync", "--user", "nobody@example.com"])
    assert result.exit_code == 1 and result.output.strip() == "Error: no user nobody@example.com with a Stripe customer"


def test_replay_failed_events(seeded, runner, client):
    from tests.webhooks.signing import post_event
    from tests.webhooks.test_endpoint import event, secret

    # customer.updated for a customer nobody has yet: processed (nothing to do). Make one fail instead:
    with seeded.app_context():
        UserFactory(email="a@example.com", stripe_customer_id="cus_test")
        UserFactory(email="new@example.com")
    response = post_event(client, event(), secret(seeded))  # email taken by another user: kept, not failed
    assert response.status_code == 200
    with seeded.app_context():
        db.session.execute(sa.update(StripeEvent).values(status="failed", error="simulated outage"))
        db.session.commit()
    result = runner.invoke(args=["stripe", "replay-events", "--failed"])
    assert result.exit_code == 0, result.output
    assert "✓ evt_test_1 customer.updated: processed" in result.output
    with seeded.app_context():
        row = db.session.scalar(sa.select(StripeEvent))
        assert (row.status, row.attempts, row.error) == ("processed", 2, None)
    missing = runner.invoke(args=["stripe", "replay-events", "--id", "evt_missing"])
    assert missing.exit_code == 1 and "no recorded event evt_missing" in missing.output


def misconfigure_portal(emulator) -> str:
    """The account's default portal configuration, set against every one of the guide's settings; returns its id."""
    client = emulator.client()
    [default] = client.v1.billing_portal.configurations.list().data
    client.v1.billing_portal.configurations.update(
        default.id,
        params={
            "features": {
                "subscription_cancel": {"mode": "immediately"},
                "invoice_history": {"enabled": False},
                "customer_update": {"allowed_updates": ["email"]},
                "payment_method_update": {"enabled": False},
                "subscription_update": {"products": [{"product": "prod_free", "prices": ["price_free_monthly"]}]},
            }
        },
    )
    return default.id


def test_portal_config_sets_every_setting_and_prints_it(seeded, runner, stripe_emulator):
    default_id = misconfigure_portal(stripe_emulator)
    client = stripe_emulator.client()

    result = runner.invoke(args=["stripe", "portal-config"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"✓ Updated Customer Portal configuration {default_id}",
        "  payment methods: updatable",
        "  billing info: updatable (name, email, address)",
        "  cancellation: at period end only",
        "  invoice history: shown",
        "  plan switching: price_starter_monthly, price_starter_yearly, price_pro_monthly, price_pro_yearly "
        "(always invoice)",
        "  downgrades: at period end (a cheaper price or a shorter interval)",
    ]
    features = client.v1.billing_portal.configurations.retrieve(default_id).features
    later = [condition.type for condition in features.subscription_update.schedule_at_period_end.conditions]
    assert sorted(later) == ["decreasing_item_amount", "shortening_interval"]
    assert features.payment_method_update.enabled and features.invoice_history.enabled
    assert features.customer_update.enabled and set(features.customer_update.allowed_updates) == {
        "name",
        "email",
        "address",
    }
    assert (features.subscription_cancel.enabled, features.subscription_cancel.mode) == (True, "at_period_end")
    offered = {p.product: sorted(p.prices) for p in features.subscription_update.products}
    assert offered == {
        "prod_starter": ["price_starter_monthly", "price_starter_yearly"],
        "prod_pro": ["price_pro_monthly", "price_pro_yearly"],
    }


def test_trigger_makes_the_real_event_reach_the_registered_endpoint(seeded, runner, stripe_emulator, live_server):
    """`flask stripe trigger EVENT`, for each of the six: the emulator sends the real event, signed, to the app."""
    client = stripe_emulator.client()
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": live_server.webhook_url, "enabled_events": SIX_EVENTS, "api_version": API_VERSION}
    )
    previous = seeded.config["STRIPE_WEBHOOK_SECRET"]
    seeded.config["STRIPE_WEBHOOK_SECRET"] = endpoint.secret
    try:
        for event_type in SIX_EVENTS:
            result = runner.invoke(args=["stripe", "trigger", event_type])
            assert result.exit_code == 0, (event_type, result.output)
            event_id = result.stdout.splitlines()[-1]
            assert event_id.startswith("evt_") and f"✓ {event_type} {event_id}" in result.output
            stripe_emulator.flush()
            assert client.v1.events.retrieve(event_id).type == event_type
            with seeded.app_context():
                row = db.session.get(StripeEvent, event_id)
                assert row is not None and row.status in ("processed", "ignored"), event_type
                db.session.remove()
    finally:
        seeded.config["STRIPE_WEBHOOK_SECRET"] = previous
    unknown = runner.invoke(args=["stripe", "trigger", "charge.refunded"])
    assert unknown.exit_code == 2 and "customer.updated" in unknown.output
