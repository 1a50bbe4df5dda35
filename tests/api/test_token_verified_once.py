"""An API call verifies its bearer token once: the per-user rate limit verifies it to know whose limit it counts,
and the view takes that verification (it decoded the token a second time, a quarter of an API request's CPU). The
view still verifies a request nothing has verified (the limiter off), with the same 401s."""

from __future__ import annotations

import pytest

from app import create_app
from app.extensions import db
from tests.api.conftest import PASSWORD, PREFIX
from tests.conftest import make_config
from tests.factories import UserFactory


@pytest.fixture
def counting_app(seeded, migrated_database, redis_url, stripe_emulator):
    """An app whose token decodes are counted through Flask-JWT-Extended's decode_key_loader hook."""

    def make(**settings):
        app = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE=stripe_emulator.url, **settings))
        decodes: list[str] = []

        @app.extensions["flask-jwt-extended"].decode_key_loader
        def counted_key(header, payload):
            decodes.append(payload.get("type"))
            return app.config["JWT_SECRET_KEY"]

        made.append(app)
        return app, decodes

    made: list = []
    yield make
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def token_for(client, email: str) -> str:
    return client.post(PREFIX + "/auth/token", json={"email": email, "password": PASSWORD}).get_json()["access_token"]


@pytest.mark.parametrize("path", ["/me", "/billing/subscription", "/strategies"])
def test_each_api_call_decodes_its_token_once(counting_app, path):
    app, decodes = counting_app()
    with app.app_context():
        UserFactory(email="once@example.com")
    client = app.test_client()
    token = token_for(client, "once@example.com")
    decodes.clear()
    response = client.get(PREFIX + path, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 403), response.get_json()  # /strategies is Pro's: 403 for Free, after it
    assert decodes == ["access"]


def test_without_the_limiter_the_view_verifies_the_token_itself(counting_app):
    app, decodes = counting_app(RATELIMIT_ENABLED=False)
    assert app.config["RATELIMIT_ENABLED"] is False
    with app.app_context():
        UserFactory(email="nolimit@example.com")
    client = app.test_client()
    token = token_for(client, "nolimit@example.com")
    decodes.clear()
    assert client.get(PREFIX + "/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert decodes == ["access"]
    missing = client.get(PREFIX + "/me")
    assert missing.status_code == 401 and missing.get_json()["error"]
    forged = client.get(PREFIX + "/me", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
    assert forged.status_code == 401


def test_a_refresh_token_is_still_refused_where_an_access_token_is_needed(counting_app):
    app, _ = counting_app()
    with app.app_context():
        UserFactory(email="refresh@example.com")
    client = app.test_client()
    refresh = client.post(PREFIX + "/auth/token", json={"email": "refresh@example.com", "password": PASSWORD})
    answer = client.get(PREFIX + "/me", headers={"Authorization": f"Bearer {refresh.get_json()['refresh_token']}"})
    assert answer.status_code == 401
