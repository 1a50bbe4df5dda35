"""The billing page with Stripe out of reach says the invoices cannot be shown, not that there are none."""

from __future__ import annotations

from app import create_app
from app.extensions import db
from app.services.billing_summary import forget_plan_outlook
from app.services.catalog import seed_plans_from_config
from stripe_emulator.testing import EmulatorServer
from tests.conftest import Auth, make_config
from tests.security.test_stripe_budget import with_customer


def test_stripe_down_the_invoices_cannot_be_shown_rather_than_none(app, migrated_database, redis_url):
    """`app`: the suite's app, taken for its clean-up of the tables and Redis after the test."""
    own = EmulatorServer().start()
    down = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE=own.url, STRIPE_MAX_NETWORK_RETRIES=0))
    try:
        with down.app_context():
            seed_plans_from_config()
        client = down.test_client()
        Auth(client).signup("invoices@example.com")
        user_id = with_customer(down, own, "invoices@example.com")
        reachable = client.get("/billing").get_data(as_text=True)
        assert "No invoices yet." in reachable and "cannot be shown" not in reachable
        own.stop()
        with down.app_context():
            forget_plan_outlook(user_id)  # as a billing commit would: the page asks Stripe again
        page = client.get("/billing").get_data(as_text=True)
        assert "Card and invoice details are temporarily unavailable" in page
        assert "Your invoices cannot be shown right now" in page and "No invoices yet." not in page
    finally:
        own.stop()
        with down.app_context():
            db.session.remove()
            db.engine.dispose()
