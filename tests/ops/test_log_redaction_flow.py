"""A full subscribe/cancel flow logs no secret: not the Stripe key, the webhook secret, the password or a token.

The app under test uses its own distinctive Stripe key (accepted by the emulator) and webhook secret, takes a
password through the sign-up form, a JWT pair through the API, checks out through the API, pays on the emulator,
receives the emulator's signed webhooks on a live server, and cancels through the API. Every line of every logger
is captured at the root twice, rendered by the app's own formatter: as JSON (production) and as console lines
(development).
"""

from __future__ import annotations

import logging

import pytest

from app import create_app
from app.extensions import db
from tests.conftest import Auth, LiveServer, make_config
from tests.ops.conftest import LogCapture

STRIPE_KEY = "sk_test_RedactionFlow51Hq8ZxYwVuTsRqPoNm"
WEBHOOK_SECRET = "whsec" + "_RedactionFlow0c9f3e7a1b5d2f8e4a6c"
PASSWORD = "a distinctive passphrase 7Q!"


@pytest.fixture
def flow_app(seeded, migrated_database, redis_url, stripe_emulator, smtp_sink):
    """The test app with its own Stripe key and webhook secret (the `app` fixture still cleans up after it)."""
    app = create_app(
        make_config(
            migrated_database,
            redis_url,
            STRIPE_API_BASE=stripe_emulator.url,
            STRIPE_SECRET_KEY=STRIPE_KEY,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(smtp_sink.port),
        )
    )
    server = LiveServer(app)
    stripe_emulator.add_webhook(server.webhook_url, WEBHOOK_SECRET)
    yield app
    server.stop()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def log_console(log_json):
    """The same lines as `log_json`, rendered as the development console renderer writes them."""
    capture = LogCapture(json_lines=False)
    logging.getLogger().addHandler(capture.handler)
    yield capture
    logging.getLogger().removeHandler(capture.handler)


def test_subscribe_and_cancel_log_no_secret(flow_app, stripe_emulator, log_json, log_console):
    client = flow_app.test_client()
    assert Auth(client).signup(email="flow@example.com", password=PASSWORD).status_code == 302

    tokens = client.post("/api/v1/auth/token", json={"email": "flow@example.com", "password": PASSWORD}).get_json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    checkout = client.post(
        "/api/v1/billing/checkout", headers=bearer, json={"plan_name": "pro", "billing_cycle": "monthly"}
    )
    assert checkout.status_code == 200, checkout.get_json()
    stripe_emulator.complete_checkout(checkout.get_json()["session_id"])
    stripe_emulator.flush()
    subscription = client.get("/api/v1/billing/subscription", headers=bearer).get_json()
    assert (subscription["plan"], subscription["status"]) == ("pro", "active"), subscription
    refreshed = client.post("/api/v1/auth/refresh", headers={"Authorization": f"Bearer {refresh}"}).get_json()
    canceled = client.post("/api/v1/billing/cancel", headers=bearer)
    assert canceled.status_code == 200 and canceled.get_json()["cancel_at_period_end"] is True
    stripe_emulator.flush()

    text = log_json.text
    events = {record["event"] for record in log_json.records()}
    # The capture saw the flow: webhooks verified and handled, the activation and the cancellation.
    assert {
        "stripe_webhook_verified",
        "stripe_webhook_handled_successfully",
        "subscription_activated",
        "subscription_updated",
        "request_completed",
    } <= events, sorted(events)
    assert "/api/v1/billing/webhooks/stripe" in text
    console = log_console.text
    assert "stripe_webhook_verified" in console and len(log_console.lines) >= len(log_json.lines)
    secrets = {
        "Stripe secret key": STRIPE_KEY,
        "webhook secret": WEBHOOK_SECRET,
        "password": PASSWORD,
        "access token": access,
        "refresh token": refresh,
        "refreshed access token": refreshed["access_token"],
        "refreshed refresh token": refreshed["refresh_token"],
    }
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} is in a log line"
        assert secret not in console, f"the {name} is in a console line"
        # Nor a recognisable part of it (a truncated token is still a leak).
        assert secret[:24] not in text and secret[-16:] not in text, name
