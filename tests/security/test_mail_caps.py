"""Every mail a stranger can make us send has a cap per recipient (RATELIMIT_ACCOUNT_MAIL_RECIPIENT, 3 an hour):
email-change links per address they go to and per account, as reset and verification mails; and the caps honour
RATELIMIT_ENABLED=false as Flask-Limiter's own limits do."""

from __future__ import annotations

import pytest

from app import create_app
from app.extensions import db
from tests.conftest import Auth, csrf_token_from, suite_app_config
from tests.factories import UserFactory
from tests.security.test_account_abuse import outbox_count
from tests.security.test_email_change import ask_change

CAPPED = "We already sent several links for this change this hour"


@pytest.fixture
def roomy(seeded):
    """The per-address and per-user request budgets out of the way: only the per-recipient caps count."""
    seeded.config["RATELIMIT_ACCOUNT_MAIL"] = "100 per minute"
    seeded.config["RATELIMIT_LOGIN"] = "100 per minute"
    return seeded


def test_email_change_links_to_one_address_are_capped_whoever_asks(roomy, client):
    with roomy.app_context():
        UserFactory(email="first@example.com")
        UserFactory(email="second@example.com")
    Auth(client).login("first@example.com")
    assert [ask_change(client, "victim@example.com").status_code for _ in range(3)] == [302] * 3
    refused = ask_change(client, "Victim@example.com")
    assert refused.status_code == 400 and CAPPED in refused.get_data(as_text=True)
    other = roomy.test_client()
    Auth(other).login("second@example.com")
    refused = ask_change(other, "victim@example.com")  # another account: the address's cap all the same
    assert refused.status_code == 400 and CAPPED in refused.get_data(as_text=True)
    assert outbox_count(roomy, "email_change", "victim@example.com") == 3


def test_email_change_requests_of_one_account_are_capped(roomy, client):
    with roomy.app_context():
        UserFactory(email="owner@example.com")
    Auth(client).login("owner@example.com")
    assert [ask_change(client, f"new{i}@example.com").status_code for i in range(3)] == [302] * 3
    refused = ask_change(client, "new3@example.com")
    assert refused.status_code == 400 and CAPPED in refused.get_data(as_text=True)
    assert outbox_count(roomy, "email_change_notice", "owner@example.com") == 3
    assert outbox_count(roomy, "email_change", "new3@example.com") == 0


@pytest.fixture
def unlimited_app(migrated_database, redis_url, stripe_emulator, smtp_sink, app):
    """An app started with RATELIMIT_ENABLED=false, on the suite's services (emptied by the `app` fixture)."""
    config = suite_app_config(migrated_database, redis_url, stripe_emulator.url, smtp_sink.port)
    unlimited = create_app({**config, "RATELIMIT_ENABLED": False})
    assert unlimited.config["RATELIMIT_ENABLED"] is False
    yield unlimited
    with unlimited.app_context():
        db.session.remove()
        db.engine.dispose()


def test_the_recipient_caps_count_nothing_with_rate_limits_off(unlimited_app):
    with unlimited_app.app_context():
        UserFactory(email="reset@example.com")
    client = unlimited_app.test_client()
    token = csrf_token_from(client.get("/forgot-password").get_data(as_text=True))
    for _ in range(5):
        client.post("/forgot-password", data={"email": "reset@example.com", "csrf_token": token}).close()
    assert outbox_count(unlimited_app, "password_reset", "reset@example.com") == 5
    Auth(client).login("reset@example.com")
    assert [ask_change(client, "moved@example.com").status_code for _ in range(4)] == [302] * 4
    assert outbox_count(unlimited_app, "email_change", "moved@example.com") == 4
