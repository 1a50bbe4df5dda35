"""API attacks beyond tests/api/test_auth_tokens.py (alg none, wrong key, expired, refresh-as-access): tokens for
a deleted user, the right key under another algorithm, a tampered payload, odd subjects and headers — all 401
JSON, never a 500. And what schemathesis found: NUL bytes (PostgreSQL text cannot hold them) were 500s, a
non-boolean `preview` applied the plan change it only meant to price, and the API stripped passwords."""

from __future__ import annotations

import base64
import json

import jwt as pyjwt
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import User
from tests.conftest import csrf_token_from
from tests.factories import UserFactory

PREFIX = "/api/v1"
GATED = [
    ("GET", "/me"),
    ("GET", "/billing/subscription"),
    ("GET", "/strategies"),
    ("POST", "/billing/portal"),
    ("POST", "/billing/cancel"),
]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def access_token(client, email: str, password: str = "correct horse") -> str:
    response = client.post(PREFIX + "/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def assert_refused(client, headers: dict, error: str = "invalid_token") -> None:
    for method, path in GATED:
        response = client.open(PREFIX + path, method=method, headers=headers)
        assert response.status_code == 401, (method, path, response.status_code, response.get_data(as_text=True))
        assert response.get_json()["error"] == error, (method, path, response.get_json())


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def user_token(seeded, client) -> str:
    with seeded.app_context():
        UserFactory(email="api@example.com")
    return access_token(client, "api@example.com")


# --- JWT ---------------------------------------------------------------------------------------------------------


def test_a_token_of_a_deleted_user_is_401(seeded, client, user_token):
    assert client.get(PREFIX + "/me", headers=bearer(user_token)).status_code == 200
    with seeded.app_context():
        db.session.execute(sa.delete(User).where(User.email == "api@example.com"))
        db.session.commit()
    assert_refused(client, bearer(user_token))


def test_the_right_key_under_another_algorithm_is_401(seeded, client, user_token):
    claims = pyjwt.decode(user_token, options={"verify_signature": False})
    assert pyjwt.get_unverified_header(user_token)["alg"] == seeded.config["JWT_ALGORITHM"] == "HS256"
    for algorithm in ("HS512", "HS384"):
        forged = pyjwt.encode(claims, seeded.config["JWT_SECRET_KEY"], algorithm=algorithm)
        assert_refused(client, bearer(forged))


def test_a_tampered_payload_is_401(seeded, client, user_token):
    with seeded.app_context():
        other = UserFactory(email="victim@example.com").id
    header, payload, signature = user_token.split(".")
    claims = pyjwt.decode(user_token, options={"verify_signature": False})
    for changed in ({"sub": str(other)}, {"exp": claims["exp"] + 86400}, {"type": "refresh"}, {"fresh": True}):
        assert_refused(client, bearer(".".join((header, b64({**claims, **changed}), signature))))
    assert_refused(client, bearer(f"{header}.{payload}."))  # the signature dropped


@pytest.mark.parametrize("subject", ["not-a-number", "-1", "99999999999999999999", "0"])
def test_a_correctly_signed_token_naming_nobody_is_401(seeded, client, subject):
    with seeded.app_context():
        from flask_jwt_extended import create_access_token

        token = create_access_token(identity=subject)
    assert_refused(client, bearer(token))


def test_a_non_string_subject_is_401(seeded, client, user_token):
    claims = pyjwt.decode(user_token, options={"verify_signature": False})
    for subject in (1, None, ["1"], {"id": 1}):
        forged = pyjwt.encode({**claims, "sub": subject}, seeded.config["JWT_SECRET_KEY"], algorithm="HS256")
        assert_refused(client, bearer(forged))


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Basic YTpi",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "bearer x",
        "Bearer \u00e9.\u00e9.\u00e9",
        "Token abc",
    ],
)
def test_malformed_authorization_headers_are_401(seeded, client, value):
    for method, path in GATED:
        response = client.open(PREFIX + path, method=method, headers={"Authorization": value})
        assert response.status_code == 401, (value, path, response.status_code)
        assert response.is_json and response.get_json()["error"] in {"invalid_token", "authorization_required"}


# --- what schemathesis found -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body",
    [
        ("/auth/token", {"email": "api\u0000@example.com", "password": "correct horse"}),
        ("/auth/token", {"email": "api@example.com", "password": "correct\u0000horse"}),
        ("/billing/checkout", {"plan_name": "pro\u0000", "billing_cycle": "monthly"}),
        ("/billing/change-plan", {"plan_name": "starter\u0000", "billing_cycle": "monthly", "preview": True}),
    ],
)
def test_a_nul_byte_in_a_json_field_is_400_not_500(seeded, client, user_token, path, body):
    response = client.post(PREFIX + path, headers=bearer(user_token), json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_field"


def test_a_nul_byte_in_a_form_or_query_is_400_not_500(seeded, client, auth):
    auth.signup("nul@example.com")
    token = csrf_token_from(client.get("/strategies/new").get_data(as_text=True))
    for field in ("name", "description", "rules"):
        data = {"name": "Edge", "description": "", "rules": "", "csrf_token": token, field: "a\x00b"}
        assert client.post("/strategies/new", data=data).status_code == 400, field
    assert (
        client.post("/billing/checkout", data={"plan": "pro\x00", "cycle": "monthly", "csrf_token": token}).status_code
        == 400
    )
    assert client.get("/billing/change?plan=pro%00&cycle=monthly").status_code == 400
    assert client.get("/pricing?ref=%00").status_code == 400
    assert "Edge" not in client.get("/strategies/").get_data(as_text=True)  # nothing was written


def test_a_pro_user_can_still_use_the_api_after_a_nul_refusal(seeded, client, user_token):
    """The refusal happens before any query: the connection is not left in a failed transaction."""
    client.post(PREFIX + "/auth/token", json={"email": "x\u0000@example.com", "password": "y"})
    assert client.get(PREFIX + "/me", headers=bearer(user_token)).status_code == 200


@pytest.mark.parametrize("preview", ["true", 1, None, "yes", [], {}])
def test_a_non_boolean_preview_is_400_and_changes_nothing(
    seeded, client, stripe_emulator, webhooks_to_app, user_token, preview
):
    checkout = client.post(
        PREFIX + "/billing/checkout", headers=bearer(user_token), json={"plan_name": "pro", "billing_cycle": "monthly"}
    ).get_json()
    stripe_emulator.complete_checkout(checkout["session_id"])
    stripe_emulator.flush()
    response = client.post(
        PREFIX + "/billing/change-plan",
        headers=bearer(user_token),
        json={"plan_name": "starter", "billing_cycle": "monthly", "preview": preview},
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_field"
    with seeded.app_context():
        customer = db.session.scalar(sa.select(User.stripe_customer_id).where(User.email == "api@example.com"))
    [subscription] = stripe_emulator.client().v1.subscriptions.list(params={"customer": customer}).data
    assert subscription["items"].data[0].price.id == "price_pro_monthly" and subscription.schedule is None


def test_a_password_with_outer_spaces_works_on_the_api_as_on_the_web(seeded, client, auth):
    password = "  spaced out password  "
    assert auth.signup("spaces@example.com", password).status_code == 302
    auth.logout()
    assert auth.login("spaces@example.com", password).status_code == 302
    assert access_token(seeded.test_client(), "spaces@example.com", password)
    response = client.post(PREFIX + "/auth/token", json={"email": "spaces@example.com", "password": password.strip()})
    assert response.status_code == 401
