"""The `customer.subscription.updated` that attaches a Portal-made schedule (a cheaper plan at the period end) queues
the "plan_change_scheduled" mail within the subscription event's usual round trips: the mail joins the row's write
(one statement), and the schedule is read from Stripe (the event names it only) — one Stripe call, made only for a
subscription with a schedule attached. The emulator's Portal over HTTP, the event posted signed to the app's real
endpoint."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa
from prometheus_client import REGISTRY

from app.extensions import db
from app.models import MailOutbox
from app.services.catalog import catalog
from tests.billing.conftest import Billing
from tests.billing.test_portal_downgrade import subscribed_in_portal
from tests.perf.test_webhook_round_trips import CEILINGS, round_trips
from tests.webhooks.signing import post_event


def stripe_calls() -> float:
    return REGISTRY.get_sample_value("stripe_api_request_seconds_count") or 0.0


@pytest.fixture
def billing(seeded, client, auth, stripe_emulator):
    """tests/billing's logged-in customer (its fixture lives in that directory's conftest)."""
    auth.signup()
    return Billing(seeded, client, auth, stripe_emulator)


def schedule_attached_event(stripe_emulator, subscription_id: str) -> dict:
    """The `customer.subscription.updated` whose object first names a schedule, as Stripe sends it (no expansion)."""
    listed = requests.get(
        f"{stripe_emulator.url}/v1/events",
        params={"type": "customer.subscription.updated", "limit": 100},
        auth=("sk_test_emulator", ""),
        timeout=10,
    ).json()["data"]
    [event] = [
        e
        for e in listed
        if e["data"]["object"]["id"] == subscription_id
        and e["data"]["object"].get("schedule")
        and "schedule" in e["data"].get("previous_attributes", {})
    ]
    return event


def test_the_event_attaching_a_portal_schedule_mails_within_its_round_trips(billing, stripe_emulator):
    row, portal = subscribed_in_portal(billing, stripe_emulator, "pro", "monthly")  # no webhooks delivered
    stripe_emulator.advance(seconds=10)  # a later second than the sync that stamped the row (else it asks Stripe)
    portal.post("update", subscription=row.stripe_subscription_id, price="price_starter_monthly")
    event = schedule_attached_event(stripe_emulator, row.stripe_subscription_id)
    assert isinstance(event["data"]["object"]["schedule"], str)
    with billing.app.app_context():
        catalog()  # the plan cache, as a running app has it

    secret = billing.app.config["STRIPE_WEBHOOK_SECRET"]
    calls = stripe_calls()
    with round_trips(billing.app) as sent:
        assert post_event(billing.app.test_client(), event, secret).status_code == 200  # as Stripe: no session
    request = sent[: sent.index("COMMIT") + 1]
    print(len(request), *request, sep="\n  ")
    assert len(request) <= CEILINGS["customer.subscription.updated"]
    assert stripe_calls() - calls == 1  # the schedule, read with the subscription

    with billing.app.app_context():
        keys = db.session.scalars(sa.select(MailOutbox.dedupe_key).where(MailOutbox.kind == "plan_change_scheduled"))
        assert list(keys) == [
            f"{row.stripe_subscription_id}:scheduled:price_starter_monthly:{row.current_period_end.isoformat()}"
            f":{event['data']['object']['schedule']}"
        ]


def test_an_event_without_a_schedule_asks_stripe_nothing(billing, stripe_emulator):
    row, portal = subscribed_in_portal(billing, stripe_emulator, "starter", "monthly")
    stripe_emulator.advance(seconds=10)
    portal.post("update", subscription=row.stripe_subscription_id, price="price_pro_monthly")  # an upgrade, made now
    listed = requests.get(
        f"{stripe_emulator.url}/v1/events",
        params={"type": "customer.subscription.updated", "limit": 1},
        auth=("sk_test_emulator", ""),
        timeout=10,
    ).json()["data"]
    [event] = listed
    assert event["data"]["object"]["schedule"] is None

    calls = stripe_calls()
    secret = billing.app.config["STRIPE_WEBHOOK_SECRET"]
    assert post_event(billing.app.test_client(), event, secret).status_code == 200
    assert stripe_calls() == calls
    with billing.app.app_context():
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(MailOutbox).where(MailOutbox.kind == "plan_change_scheduled")
            )
            == 0
        )
