"""JWT bearer tokens: issue, refresh, and every kind of bad token answered 401 JSON."""

from datetime import timedelta

import jwt as pyjwt
import pytest

from tests.factories import UserFactory


def get_tokens(client, email="api@example.com", password="correct horse"):
    return client.post("/api/v1/auth/token", json={"email": email, "password": password})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_token_pair_and_use(seeded, client):
    with seeded.app_context():
        UserFactory(email="api@example.com")
    response = get_tokens(client, "API@example.com")
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 15 * 60
    me = client.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.get_json()["email"] == "api@example.com"

    refreshed = client.post("/api/v1/auth/refresh", headers=bearer(body["refresh_token"]))
    assert refreshed.status_code == 200
    assert client.get("/api/v1/me", headers=bearer(refreshed.get_json()["access_token"])).status_code == 200


def test_bad_credentials_and_bad_bodies(seeded, client):
    with seeded.app_context():
        UserFactory(email="api@example.com")
    response = get_tokens(client, password="wrong password")
    assert response.status_code == 401
    assert response.get_json() == {"error": "invalid_credentials", "message": "Email or password is incorrect."}
    response = client.post("/api/v1/auth/token", data="not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_json"
    response = client.post("/api/v1/auth/token", json={"email": "api@example.com"})
    assert response.status_code == 400
    assert response.get_json() == {"error": "missing_field", "message": "'password' is required."}
    response = client.post("/api/v1/auth/token", json={"email": ["x"], "password": "y"})
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_field"


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        # Not a JSON object, however it is sent: refused as a whole before any field is named.
        ("[]", "application/json", ("invalid_json", "The request body must be a JSON object.")),
        ("null", "application/json", ("invalid_json", "The request body must be a JSON object.")),
        # Nested past Python's parser (RecursionError, not ValueError): it was a 500.
        ("[" * 5000 + "]" * 5000, "application/json", ("invalid_json", "The request body must be a JSON object.")),
        (
            '{"email": ' + "[" * 5000 + "]" * 5000 + ', "password": "x"}',
            "application/json",
            ("invalid_json", "The request body must be a JSON object."),
        ),
        (
            "email=a&password=b",
            "application/x-www-form-urlencoded",
            ("invalid_json", "The request body must be a JSON object."),
        ),
        (
            '{"email": "api@example.com", "password": "x"}',
            "text/plain",
            ("invalid_json", "The request body must be a JSON object."),
        ),
        # The first field's problem, in the model's order, with the field's name.
        ('{"password": 5}', "application/json", ("missing_field", "'email' is required.")),
        ('{"email": "  ", "password": 5}', "application/json", ("missing_field", "'email' is required.")),
        ('{"email": 5}', "application/json", ("invalid_field", "'email' must be a string.")),
        (
            '{"email": "a\\u0000", "password": "x"}',
            "application/json",
            ("invalid_field", "'email' must not contain NUL characters."),
        ),
        (
            '{"email": "api@example.com", "password": "' + "p" * 129 + '"}',
            "application/json",
            ("invalid_field", "'password' must be at most 128 characters."),
        ),
        (
            '{"email": "api@example.com", "password": "   "}',
            "application/json",
            ("missing_field", "'password' is required."),
        ),
    ],
)
def test_every_bad_body_is_a_400_naming_its_first_problem(seeded, client, body, content_type, expected):
    response = client.post("/api/v1/auth/token", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response.get_json() == {"error": expected[0], "message": expected[1]}


def test_missing_forged_expired_and_misused_tokens_are_401(seeded, client):
    with seeded.app_context():
        UserFactory(email="api@example.com")
    tokens = get_tokens(client).get_json()
    assert client.get("/api/v1/me").get_json()["error"] == "authorization_required"

    forged = pyjwt.encode(
        {"sub": "1", "type": "access", "fresh": False}, "not-the-key-but-long-enough-for-hs256!", algorithm="HS256"
    )
    none_alg = pyjwt.encode({"sub": "1", "type": "access"}, None, algorithm="none")
    with seeded.app_context():
        from flask_jwt_extended import create_access_token

        expired = create_access_token(identity="1", expires_delta=timedelta(seconds=-1))
    for token, error in (
        (forged, "invalid_token"),
        (none_alg, "invalid_token"),
        (expired, "token_expired"),
        (tokens["refresh_token"], "invalid_token"),
    ):
        response = client.get("/api/v1/me", headers=bearer(token))
        assert response.status_code == 401, token
        assert response.get_json()["error"] == error
    # An access token is not a refresh token either.
    response = client.post("/api/v1/auth/refresh", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401


def test_a_token_of_the_other_kind_is_told_which_kind_the_endpoint_takes(seeded, client):
    """An access token sent to /auth/refresh, or a refresh token where an access token is needed, was answered
    "The access token is invalid.": the answer names the kind the endpoint takes, and both tokens still work."""
    with seeded.app_context():
        UserFactory(email="api@example.com")
    tokens = get_tokens(client).get_json()
    response = client.post("/api/v1/auth/refresh", headers=bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "invalid_token",
        "message": "This endpoint takes a refresh token, not an access token.",
    }
    for method, path in (("get", "/api/v1/me"), ("get", "/api/v1/strategies"), ("get", "/api/v1/billing/subscription")):
        response = getattr(client, method)(path, headers=bearer(tokens["refresh_token"]))
        assert response.status_code == 401, path
        assert response.get_json() == {
            "error": "invalid_token",
            "message": "This endpoint takes an access token, not a refresh token.",
        }, path
    assert client.get("/api/v1/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"])).status_code == 200


def test_a_bad_token_at_auth_refresh_is_spoken_of_as_a_refresh_token(seeded, client):
    """/auth/refresh takes a refresh token: its answers for none, a forged or an expired one say so (not "Send an
    access token" nor "refresh it")."""
    with seeded.app_context():
        from flask_jwt_extended import create_refresh_token

        expired = create_refresh_token(identity="1", expires_delta=timedelta(seconds=-1))
    forged = pyjwt.encode(
        {"sub": "1", "type": "refresh", "fresh": False}, "not-the-key-but-long-enough-for-hs256!", algorithm="HS256"
    )
    answers = [
        client.post("/api/v1/auth/refresh").get_json(),
        client.post("/api/v1/auth/refresh", headers=bearer(forged)).get_json(),
        client.post("/api/v1/auth/refresh", headers=bearer(expired)).get_json(),
    ]
    assert answers == [
        {"error": "authorization_required", "message": "Send a refresh token: 'Authorization: Bearer <token>'."},
        {"error": "invalid_token", "message": "The refresh token is invalid."},
        {"error": "token_expired", "message": "The refresh token has expired; log in again."},
    ]
    # Where an access token is needed, the answers name it, as before.
    assert client.get("/api/v1/me").get_json()["message"] == "Send an access token: 'Authorization: Bearer <token>'."
    assert client.get("/api/v1/me", headers=bearer(forged)).get_json()["message"] == "The access token is invalid."


def test_cors_only_for_allowed_origins(seeded, migrated_database, redis_url):
    from app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(migrated_database, redis_url, ALLOWED_ORIGINS='["https://app.example.com"]'))
    client = app.test_client()
    ok = client.options(
        "/api/v1/me", headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}
    )
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://app.example.com"
    other = client.options(
        "/api/v1/me", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    page = client.get("/pricing", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_the_api_is_rate_limited_per_user(seeded, migrated_database, redis_url, stripe_emulator):
    from app import create_app
    from tests.conftest import make_config

    app = create_app(
        make_config(migrated_database, redis_url, STRIPE_API_BASE=stripe_emulator.url, RATELIMIT_API="3 per minute")
    )
    client = app.test_client()
    with app.app_context():
        UserFactory(email="api@example.com")
    token = get_tokens(client).get_json()["access_token"]  # counted against the address: no token yet
    statuses = [client.get("/api/v1/me", headers=bearer(token)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/me", headers=bearer(token))
    assert response.status_code == 429 and response.get_json()["error"] == "too_many_requests"
