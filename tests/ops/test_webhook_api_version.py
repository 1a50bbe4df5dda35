"""Events of another API version are refused whole (422 `api_version_mismatch`), logged and counted; a delivery
without a signature header is counted as invalid."""

from __future__ import annotations

import time

import sqlalchemy as sa

from app.extensions import db
from app.models import StripeEvent, UserSubscription
from app.services.webhooks import API_VERSION
from tests.factories import UserFactory
from tests.ops.test_metrics import scrape
from tests.webhooks.signing import post_event

URL = "/api/v1/billing/webhooks/stripe"
PUBLIC_MISMATCH = 'stripe_webhook_events_total{outcome="api_version_mismatch",type="customer.subscription.updated"}'
INVALID = 'stripe_webhook_events_total{outcome="invalid_signature",type="unknown"}'


def old_shape_subscription_event(customer: str) -> dict:
    """customer.subscription.updated as an endpoint pinned to 2024-06-20 receives it: the period dates on the
    subscription, none on its items."""
    now = int(time.time())
    subscription = {
        "id": "sub_old_shape",
        "object": "subscription",
        "customer": customer,
        "status": "active",
        "cancel_at_period_end": False,
        "created": now,
        "current_period_start": now,
        "current_period_end": now + 30 * 86400,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_old",
                    "object": "subscription_item",
                    "price": {"id": "price_pro_monthly", "object": "price", "recurring": {"interval": "month"}},
                }
            ],
        },
    }
    return {
        "id": "evt_old_shape",
        "object": "event",
        "api_version": "2024-06-20",
        "created": now,
        "livemode": False,
        "type": "customer.subscription.updated",
        "data": {"object": subscription},
    }


def test_an_event_of_another_api_version_is_refused_whole_logged_and_counted(seeded, client, log_json):
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_old_shape")
    before = scrape(client).get(PUBLIC_MISMATCH, 0)

    response = post_event(client, old_shape_subscription_event("cus_old_shape"), seeded.config["STRIPE_WEBHOOK_SECRET"])

    assert response.status_code == 422
    assert response.get_json()["error"] == "api_version_mismatch"
    assert "2024-06-20" in response.get_json()["message"] and API_VERSION in response.get_json()["message"]
    with seeded.app_context():  # nothing written: no half-applied subscription without a period end
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSubscription)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StripeEvent)) == 0
    assert scrape(client)[PUBLIC_MISMATCH] == before + 1
    [line] = [r for r in log_json.records() if r.get("event") == "stripe_webhook_api_version_mismatch"]
    assert (line["api_version"], line["expected"], line["event_id"]) == ("2024-06-20", API_VERSION, "evt_old_shape")


def test_the_same_event_in_the_library_version_is_applied(seeded, client):
    with seeded.app_context():
        UserFactory(email="new@example.com", stripe_customer_id="cus_old_shape")
    event = old_shape_subscription_event("cus_old_shape")
    event["api_version"] = API_VERSION
    event["id"] = "evt_current_shape"
    assert post_event(client, event, seeded.config["STRIPE_WEBHOOK_SECRET"]).status_code in (200, 422)
    with seeded.app_context():
        assert db.session.get(StripeEvent, "evt_current_shape") is not None  # recorded: the version let it through


def test_a_delivery_without_a_signature_header_is_counted_as_invalid(seeded, client):
    before = scrape(client).get(INVALID, 0)
    response = client.post(URL, data=b"{}", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_signature"
    assert scrape(client)[INVALID] == before + 1
