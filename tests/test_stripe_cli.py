"""`flask stripe …` against the emulator: catalog, webhook endpoint, reconcile with drift, replay."""
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, StripeEvent, UserSubscription
from app.services.checkout import start_checkout
from app.services.webhooks import GUIDE_EVENTS, HANDLERS
from tests.factories import UserFactory


def paid_user(app, emulator, email="trader@example.com"):
    with app.test_request_context():
        user = UserFactory(email=email)
        checkout = start_checkout(user.id, "pro", "monthly", success_url="http://t/s?session_id={CHECKOUT_SESSION_ID}",
                                  cancel_url="http://t/p")
    emulator.complete_checkout(checkout.session_id)
    return email


def test_create_catalog_is_idempotent_and_prints_the_env_lines(seeded, runner, stripe_emulator):
    result = runner.invoke(args=["stripe", "create-catalog"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("STRIPE_PRICE_")]
    assert lines == ["STRIPE_PRICE_FREE_MONTHLY=price_free_monthly",
                     "STRIPE_PRICE_STARTER_MONTHLY=price_starter_monthly",
                     "STRIPE_PRICE_STARTER_YEARLY=price_starter_yearly",
                     "STRIPE_PRICE_PRO_MONTHLY=price_pro_monthly",
                     "STRIPE_PRICE_PRO_YEARLY=price_pro_yearly"]
    stripe_emulator.client().v1.prices.update("price_pro_yearly", params={"lookup_key": "pro_yearly_old"})
    result = runner.invoke(args=["stripe", "create-catalog"])
    new_line = [line for line in result.stdout.splitlines() if line.startswith("STRIPE_PRICE_PRO_YEARLY=")][0]
    assert new_line != "STRIPE_PRICE_PRO_YEARLY=price_pro_yearly"  # a missing price is created
    price = stripe_emulator.client().v1.prices.retrieve(new_line.split("=", 1)[1])
    assert (price.unit_amount, price.recurring.interval, price.lookup_key) == (47999, "year", "pro_yearly")


def test_webhook_endpoint_is_created_once_with_the_guides_events(seeded, runner, stripe_emulator):
    url = "https://billing.example.com/api/v1/billing/webhooks/stripe"
    result = runner.invoke(args=["stripe", "webhook-endpoint", "--url", url])
    assert result.exit_code == 0, result.output
    assert "STRIPE_WEBHOOK_SECRET=whsec_" in result.output
    [endpoint] = stripe_emulator.client().v1.webhook_endpoints.list().data
    assert endpoint.url == url and set(GUIDE_EVENTS) < set(endpoint.enabled_events) == set(HANDLERS)
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
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id))
                                 .where(AuditLog.action == "reconcile.drift_repaired")) == 1
    again = runner.invoke(args=["stripe", "sync", "--all"])
    assert again.exit_code == 0 and "Synced 1 customer(s); 0 had drifted." in again.output


def test_sync_needs_a_scope_and_a_known_user(seeded, runner):
    assert runner.invoke(args=["stripe", "sync"]).exit_code == 2
    result = runner.invoke(args=["stripe", "sync", "--user", "nobody@example.com"])
    assert result.exit_code == 1 and result.output.strip() == "Error: no user nobody@example.com with a Stripe customer"


def test_replay_failed_events(seeded, runner, client):
    from tests.webhooks.test_endpoint import event, secret
    from tests.webhooks.signing import post_event

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
