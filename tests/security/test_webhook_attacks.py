"""Attacks on the webhook endpoint beyond tests/webhooks/test_endpoint.py (forged, wrong secret, 6-minute-old,
other body, missing header, malformed JSON and 2 MB are there): replay of a captured delivery, an event for an
unknown customer, a checkout whose reference names another user, and property-based fuzzing — never a 500."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.models import AuditLog, StripeEvent, User, UserSubscription
from tests.factories import UserFactory
from tests.webhooks.signing import post_event, sign

URL = "/api/v1/billing/webhooks/stripe"


def secret(app) -> str:
    return app.config["STRIPE_WEBHOOK_SECRET"]


def state(app) -> tuple:
    """Everything a webhook could change."""
    with app.app_context():
        users = db.session.execute(sa.select(User.id, User.email, User.name, User.stripe_customer_id)).all()
        subs = db.session.execute(sa.select(UserSubscription.stripe_subscription_id, UserSubscription.status)).all()
        audits = db.session.execute(sa.select(AuditLog.action, AuditLog.details)).all()
        events = db.session.execute(sa.select(StripeEvent.id, StripeEvent.status)).all()
        db.session.remove()
    return sorted(users), sorted(subs), sorted(map(repr, audits)), sorted(events)


def event(event_id: str, type_: str, obj: dict, created: int | None = None) -> dict:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "type": type_,
        "created": created or int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def test_replayed_capture_is_a_duplicate_and_a_retimed_one_is_refused(seeded, client):
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_victim")
    body = json.dumps(
        event(
            "evt_captured", "customer.updated", {"id": "cus_victim", "object": "customer", "email": "new@example.com"}
        )
    ).encode()
    header = sign(body, secret(seeded))
    assert (
        client.post(URL, data=body, content_type="application/json", headers={"Stripe-Signature": header}).get_json()[
            "status"
        ]
        == "processed"
    )
    before = state(seeded)
    # The same capture again, within the tolerance: recorded already, nothing applied twice.
    replay = client.post(URL, data=body, content_type="application/json", headers={"Stripe-Signature": header})
    assert replay.status_code == 200 and replay.get_json()["status"] == "duplicate"
    # The capture replayed after the tolerance: its t= is too old; moving t= forward breaks the MAC.
    old_t = int(header.split(",")[0][2:]) - 301
    stale = sign(body, secret(seeded), old_t)
    retimed = header.replace(header.split(",")[0], f"t={int(time.time()) + 5}")
    for forged in (stale, retimed):
        response = client.post(URL, data=body, content_type="application/json", headers={"Stripe-Signature": forged})
        assert response.status_code == 400 and response.get_json()["error"] == "invalid_signature"
    assert state(seeded) == before


def test_event_for_an_unknown_customer_is_ignored_not_a_500_loop(seeded, client, stripe_emulator):
    before = state(seeded)
    sub = {
        "id": "sub_nobody",
        "object": "subscription",
        "customer": "cus_nobody_knows",
        "status": "active",
        "items": {
            "data": [
                {"id": "si_1", "price": {"id": "price_pro_monthly"}, "current_period_start": 1, "current_period_end": 2}
            ]
        },
    }
    for i, type_ in enumerate(
        (
            "customer.subscription.updated",
            "invoice.payment_failed",
            "invoice.paid",
            "customer.updated",
            "checkout.session.async_payment_failed",
        )
    ):
        obj = {  # each the object its type carries (any other is refused with 422, tests/webhooks/test_endpoint.py)
            "customer.subscription.updated": sub,
            "customer.updated": {"id": "cus_nobody_knows", "object": "customer", "email": "nobody@example.com"},
            "checkout.session.async_payment_failed": {
                "id": f"cs_nobody{i}",
                "object": "checkout.session",
                "customer": "cus_nobody_knows",
            },
        }.get(type_, {"id": f"in_nobody{i}", "object": "invoice", "customer": "cus_nobody_knows", "status": "open"})
        response = post_event(client, event(f"evt_unknown_{i}", type_, obj), secret(seeded))
        assert response.status_code == 200, (type_, response.get_json())
    after = state(seeded)
    assert after[:2] == before[:2]  # no user, no subscription
    assert [e for e in after[3] if e[1] not in ("processed", "ignored")] == []


def test_checkout_whose_reference_names_another_user_is_refused(seeded, client, stripe_emulator):
    with seeded.app_context():
        victim = UserFactory(email="victim@example.com")
        attacker = UserFactory(email="attacker@example.com")
        victim_id, attacker_id = victim.id, attacker.id
    customer = stripe_emulator.client().v1.customers.create(
        params={"email": "attacker@example.com", "metadata": {"user_id": str(attacker_id)}}
    )
    session = {
        "id": "cs_test_forged",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "customer": customer.id,
        "client_reference_id": str(victim_id),
        "metadata": {"user_id": str(attacker_id)},
        "subscription": None,
    }
    response = post_event(client, event("evt_forged_checkout", "checkout.session.completed", session), secret(seeded))
    assert response.status_code == 200
    with seeded.app_context():
        assert db.session.get(User, victim_id).stripe_customer_id is None
        assert (
            db.session.scalar(sa.select(AuditLog.details).where(AuditLog.action == "checkout.refused"))["reason"]
            == "reference_mismatch"
        )
        assert db.session.scalar(sa.select(sa.func.count(UserSubscription.id))) == 0
        db.session.remove()


header_text = st.text(st.characters(blacklist_characters="\r\n\x00", max_codepoint=0xFF), max_size=200)
header_values = st.one_of(
    header_text,
    st.builds(lambda t, v: f"t={t},v1={v}", st.integers(-(10**12), 10**12), st.text("0123456789abcdef", max_size=70)),
    st.builds(lambda parts: ",".join(parts), st.lists(header_text, max_size=6)),
)
bodies = st.one_of(
    st.binary(max_size=2000),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.one_of(st.none(), header_values),
    body=bodies,
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    ),
)
def test_fuzzed_headers_and_bodies_never_500(seeded, client, header, body, content_type):
    headers = {} if header is None else {"Stripe-Signature": header}
    response = client.post(URL, data=body, content_type=content_type, headers=headers)
    assert response.status_code in (400, 413), (response.status_code, header, body[:80])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    obj=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "object",
                "customer",
                "status",
                "items",
                "metadata",
                "parent",
                "client_reference_id",
                "payment_status",
                "subscription",
                "email",
            ]
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=12),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        ),
        max_size=8,
    ),
    type_=st.sampled_from(
        [
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "invoice.paid",
            "invoice.payment_failed",
            "checkout.session.completed",
            "customer.updated",
            "checkout.session.async_payment_failed",
            "payout.paid",
        ]
    ),
    created=st.integers(0, 2**31),
)
def test_fuzzed_signed_events_are_handled_or_fail_whole(seeded, client, obj, type_, created):
    """Validly signed odd shapes (as if the secret leaked): handled, refused, or — an event the handler cannot apply,
    422 (Stripe retries it) — rolled back whole: the event row says failed, and nothing else changed. Never a 500."""
    with seeded.app_context():
        if not db.session.scalar(sa.select(User.id).where(User.email == "fuzz@example.com")):
            UserFactory(email="fuzz@example.com", stripe_customer_id="cus_fuzz")
        db.session.remove()
    if isinstance(obj.get("customer"), str) or "customer" not in obj:
        obj = {**obj, "customer": "cus_fuzz"}
    before = state(seeded)
    event_id = f"evt_fuzz_{abs(hash((type_, repr(obj), created)))}"
    body = json.dumps(event(event_id, type_, obj, created)).encode()
    response = client.post(
        URL, data=body, content_type="application/json", headers={"Stripe-Signature": sign(body, secret(seeded))}
    )
    assert response.status_code in (200, 400, 422), (response.status_code, response.get_json())
    if response.status_code != 200:
        after = state(seeded)
        assert after[:3] == before[:3], (type_, obj)  # users, subscriptions, audit: untouched
        # 422: failed and kept for replay; 400: not recorded at all (PostgreSQL cannot store a \u0000)
        recorded = {e for e, _ in after[3]}
        assert (event_id, "failed") in after[3] if response.status_code == 422 else event_id not in recorded
