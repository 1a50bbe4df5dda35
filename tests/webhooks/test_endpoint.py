"""The webhook endpoint: verification, record-then-act, duplicates, concurrency, faults — on PostgreSQL and Redis."""

import json
import threading
import time

import pytest
import redis
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import AuditLog, StripeEvent, User, UserSubscription
from app.services import webhooks
from tests.conftest import make_config
from tests.factories import UserFactory
from tests.webhooks.signing import post_event, sign

URL = "/api/v1/billing/webhooks/stripe"


def event(event_id="evt_test_1", type_="customer.updated", obj=None, created=None):
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created or int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
        "data": {"object": obj or {"id": "cus_test", "object": "customer", "email": "new@example.com", "name": "N"}},
    }


def secret(app):
    return app.config["STRIPE_WEBHOOK_SECRET"]


def events_in_db(app):
    with app.app_context():
        return {e.id: (e.status, e.attempts) for e in db.session.scalars(sa.select(StripeEvent))}


def test_valid_event_is_recorded_and_applied(seeded, client):
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
    response = post_event(client, event(), secret(seeded))
    assert response.status_code == 200
    assert response.get_json() == {"status": "processed", "event_id": "evt_test_1"}
    assert events_in_db(seeded) == {"evt_test_1": ("processed", 1)}
    with seeded.app_context():
        user = db.session.scalar(sa.select(User))  # Stripe's email is the billing email, never the login
        assert (user.email, user.billing_email, user.name) == ("old@example.com", "new@example.com", "N")


def test_duplicate_is_answered_without_side_effects(seeded, client, redis_url):
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
    post_event(client, event(), secret(seeded))
    assert redis.Redis.from_url(redis_url).ttl("webhook_processed:evt_test_1") > 6 * 24 * 3600
    # Even with Redis emptied, the database row makes the second delivery a duplicate.
    redis.Redis.from_url(redis_url).flushdb()
    second = post_event(
        client, event(obj={"id": "cus_test", "object": "customer", "email": "other@example.com"}), secret(seeded)
    )
    assert second.status_code == 200 and second.get_json()["status"] == "duplicate"
    with seeded.app_context():
        assert db.session.scalar(sa.select(User.billing_email)) == "new@example.com"
    assert events_in_db(seeded) == {"evt_test_1": ("processed", 1)}


def test_bad_signatures_are_refused_and_record_nothing(seeded, client):
    body = json.dumps(event()).encode()
    cases = {
        "forged": {"Stripe-Signature": "t=1,v1=deadbeef"},
        "wrong secret": {"Stripe-Signature": sign(body, "whsec_not_ours")},
        "six minutes old": {"Stripe-Signature": sign(body, secret(seeded), int(time.time()) - 360)},
        "an hour ahead": {"Stripe-Signature": sign(body, secret(seeded), int(time.time()) + 3600)},
        "six minutes ahead": {"Stripe-Signature": sign(body, secret(seeded), int(time.time()) + 360)},
        "missing": {},
    }
    for name, headers in cases.items():
        response = client.post(URL, data=body, content_type="application/json", headers=headers)
        assert response.status_code == 400, name
        assert response.get_json()["error"] == "invalid_signature", name
    other_body = json.dumps(event(event_id="evt_other")).encode()
    response = client.post(
        URL, data=other_body, content_type="application/json", headers={"Stripe-Signature": sign(body, secret(seeded))}
    )
    assert response.status_code == 400
    assert events_in_db(seeded) == {}


def test_a_signature_a_minute_ahead_is_accepted(seeded, client):
    """A sender's clock a little ahead of ours is within the tolerance, as one a little behind is."""
    response = post_event(client, event(), secret(seeded), int(time.time()) + 60)
    assert response.status_code == 200, response.get_json()
    assert events_in_db(seeded) == {"evt_test_1": ("processed", 1)}


def test_rotated_secrets_are_all_accepted(migrated_database, redis_url, stripe_emulator):
    app = create_app(
        make_config(
            migrated_database,
            redis_url,
            STRIPE_API_BASE=stripe_emulator.url,
            STRIPE_WEBHOOK_SECRET="whsec_old_secret_aaaa, whsec_new_secret_bbbb",
        )
    )
    client = app.test_client()
    assert post_event(client, event("evt_a"), "whsec_old_secret_aaaa").status_code == 200
    assert post_event(client, event("evt_b"), "whsec_new_secret_bbbb").status_code == 200
    assert post_event(client, event("evt_c"), "whsec_retired_cccc").status_code == 400
    with app.app_context():
        db.session.execute(sa.text("TRUNCATE stripe_events"))
        db.session.commit()
        db.engine.dispose()


def test_no_secret_fails_closed(migrated_database, redis_url, stripe_emulator):
    app = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE=stripe_emulator.url))
    app.config["STRIPE_WEBHOOK_SECRET"] = ""
    response = post_event(app.test_client(), event(), "whsec_anything")
    assert response.status_code == 500
    assert response.get_json()["error"] == "webhook_not_configured"
    with app.app_context():
        db.engine.dispose()


def test_malformed_bodies_and_oversize(seeded, client):
    body = b"{not json"
    response = client.post(
        URL, data=body, content_type="application/json", headers={"Stripe-Signature": sign(body, secret(seeded))}
    )
    assert response.status_code == 400
    body = json.dumps({"id": 5}).encode()
    response = client.post(
        URL, data=body, content_type="application/json", headers={"Stripe-Signature": sign(body, secret(seeded))}
    )
    assert response.status_code == 400
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = client.post(
        URL, data=big, content_type="application/json", headers={"Stripe-Signature": sign(big, secret(seeded))}
    )
    assert response.status_code == 413
    assert events_in_db(seeded) == {}


def test_unknown_types_are_recorded_and_ignored(seeded, client):
    response = post_event(client, event(type_="payout.paid", obj={"id": "po_1", "object": "payout"}), secret(seeded))
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert events_in_db(seeded) == {"evt_test_1": ("ignored", 1)}


def failing_event(app, client) -> dict:
    """Post a subscription event whose handler fails (it names a subscription of another user); return it."""
    body = contradicting_event(app)
    response = post_event(client, body, secret(app))
    assert (response.status_code, response.get_json()["error"]) == (422, "unprocessable_event")
    return body


def owner_and_intruder(app, plan: str = "pro") -> None:
    """User A (cus_owner) holds sub_shared on `plan`, monthly; user B (cus_intruder) has no subscription."""
    with app.app_context():
        owner = UserFactory(email="owner@example.com", stripe_customer_id="cus_owner")
        UserFactory(email="intruder@example.com", stripe_customer_id="cus_intruder")
        plan_id = db.session.scalar(sa.text("SELECT id FROM subscription_plans WHERE name = :name"), {"name": plan})
        db.session.add(
            UserSubscription(
                user_id=owner.id,
                plan_id=plan_id,
                billing_cycle="monthly",
                status="active",
                stripe_subscription_id="sub_shared",
            )
        )
        db.session.commit()


def contradicting_event(app) -> dict:
    """A subscription event whose handler fails: it names the subscription of another user than its customer's."""
    owner_and_intruder(app)
    sub = {
        "id": "sub_shared",
        "object": "subscription",
        "customer": "cus_intruder",
        "status": "canceled",
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "items": {
            "data": [
                {"id": "si_1", "price": {"id": "price_pro_monthly"}, "current_period_start": 1, "current_period_end": 2}
            ]
        },
    }
    return event("evt_bad", "customer.subscription.updated", sub)


def test_an_event_contradicting_our_data_is_422_rolled_back_and_the_retry_succeeds(seeded, client):
    body = failing_event(seeded, client)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 1)}
    with seeded.app_context():
        row = db.session.scalar(sa.select(StripeEvent))
        assert "belongs to another user" in row.error
        assert db.session.scalar(sa.select(UserSubscription.status)) == "active"  # nothing partial
        assert (
            db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action.like("subscription.%"))) == 0
        )
        # The operator repairs the mapping; Stripe's retry then succeeds.
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = NULL WHERE email = 'intruder@example.com'"))
        db.session.execute(
            sa.text("UPDATE users SET stripe_customer_id = 'cus_intruder' WHERE email = 'owner@example.com'")
        )
        db.session.commit()
    response = post_event(client, body, secret(seeded))
    assert response.status_code == 200
    assert events_in_db(seeded) == {"evt_bad": ("processed", 2)}


def test_two_failures_of_one_event_at_once_count_two_attempts(seeded, client):
    """Two deliveries (or a delivery and a queue job) failing on one event at once have both read its attempt count
    before either failure was kept: each failure adds its attempt to the row as it is then (`attempts + 1` in SQL),
    instead of writing the count it read plus one, which counted the two as one."""
    body = failing_event(seeded, client)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 1)}
    with seeded.app_context():
        for _ in range(2):  # both read 1 attempt, so each applies it as its 2nd
            with pytest.raises(ValueError, match="belongs to another user"):
                webhooks.apply(body, 2)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 3)}


def test_a_signed_event_of_an_unexpected_shape_is_422_kept_as_failed_and_changes_nothing(seeded, client):
    """As an API-version mismatch would send: a subscription without its items. Not a 500 (our fault), a 422."""
    with seeded.app_context():
        UserFactory(email="shape@example.com", stripe_customer_id="cus_shape")
    body = event(
        "evt_shape",
        "customer.subscription.updated",
        {
            "id": "sub_shape",
            "object": "subscription",
            "customer": "cus_shape",
            "status": "active",
            "items": {
                "data": [{"id": "si_1", "price": {"id": "price_pro_monthly"}, "current_period_end": "2026-12-28"}]
            },
        },
    )  # a date, where Stripe sends seconds
    response = post_event(client, body, secret(seeded))
    assert response.status_code == 422
    assert response.get_json()["error"] == "unprocessable_event"
    assert "customer.subscription.updated" in response.get_json()["message"]
    assert events_in_db(seeded) == {"evt_shape": ("failed", 1)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(StripeEvent.error)).startswith(("ValueError", "TypeError"))
        assert db.session.scalar(sa.select(sa.func.count(UserSubscription.id))) == 0
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id))) == 0


def test_a_signed_event_the_database_cannot_store_is_400_and_records_nothing(seeded, client):
    body = event("evt_nul", "customer.updated", {"id": "cus_x", "object": "customer", "name": "A\u0000B"})
    response = post_event(client, body, secret(seeded))
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_payload")
    assert events_in_db(seeded) == {}


def test_a_signed_body_nested_past_the_parser_is_400_and_records_nothing(seeded, client):
    """Python's JSON parser raises RecursionError (not ValueError) at about a thousand levels: it was a 500."""
    body = (
        '{"id": "evt_deep", "type": "customer.updated", "data": {"object": ' + "[" * 5000 + "]" * 5000 + "}}"
    ).encode()
    response = client.post(
        "/api/v1/billing/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": sign(body, secret(seeded))},
    )
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_payload")
    assert events_in_db(seeded) == {}


def test_concurrent_deliveries_process_once(seeded, live_server):
    import urllib.request

    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
    body = json.dumps(event("evt_race")).encode()
    statuses = []

    def deliver():
        request = urllib.request.Request(
            live_server.webhook_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, secret(seeded))},
        )
        with urllib.request.urlopen(request) as response:
            statuses.append(json.loads(response.read())["status"])

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == ["duplicate"] * 7 + ["processed"]
    assert events_in_db(seeded) == {"evt_race": ("processed", 1)}
    with seeded.app_context():
        assert (
            db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "customer.email_changed"))
            == 1
        )


@pytest.mark.parametrize(
    ("type_", "obj"),
    [
        ("customer.subscription.updated", {"weird": 1}),
        ("customer.subscription.deleted", {"id": "cus_shape", "object": "customer", "email": "x@example.com"}),
        ("invoice.payment_failed", {"id": "in_1", "object": "subscription", "customer": "cus_shape"}),
        ("checkout.session.completed", {"object": "checkout.session", "customer": "cus_shape"}),  # no id
        ("customer.updated", {"id": "sub_1", "object": "subscription", "customer": "cus_shape"}),
    ],
)
def test_an_object_other_than_the_type_says_is_refused_and_changes_nothing(seeded, client, type_, obj):
    """A signed event whose object is not what its type carries was answered 200 `processed` after the handler found
    nothing in it to apply; the README promises 422 for a shape the handler does not expect."""
    with seeded.app_context():
        UserFactory(email="shape@example.com", stripe_customer_id="cus_shape")
    response = post_event(client, event("evt_odd", type_, obj), secret(seeded))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "unprocessable_event"
    assert type_ in response.get_json()["message"]
    assert events_in_db(seeded) == {"evt_odd": ("failed", 1)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(StripeEvent.error)).startswith("ValueError")
        assert db.session.scalar(sa.select(User.email).where(User.stripe_customer_id == "cus_shape")) == (
            "shape@example.com"
        )
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id))) == 0
