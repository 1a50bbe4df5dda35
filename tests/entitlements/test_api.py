"""`GET/POST /api/v1/strategies`: bearer tokens, `api_access` (Pro), 400/403 JSON."""

import sqlalchemy as sa

from app.extensions import db
from app.models import SubscriptionPlan


def bearer(client, email="trader@example.com"):
    response = client.post("/api/v1/auth/token", json={"email": email, "password": "correct horse"})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_free_and_starter_get_upgrade_required_json(member):
    user = member("free")
    headers = bearer(user.client)
    for plan in ("free", "starter"):
        user.on_plan(plan)
        for response in (
            user.client.get("/api/v1/strategies", headers=headers),
            user.client.post("/api/v1/strategies", headers=headers, json={"name": "x"}),
        ):
            assert response.status_code == 403
            body = response.get_json()
            assert set(body) == {"error", "feature", "required_plan", "message"}
            assert body["error"] == "upgrade_required" and body["feature"] == "api_access"
            assert body["required_plan"] == "pro" and "API access" in body["message"]


def test_pro_lists_and_creates_strategies(member):
    user = member("pro")
    headers = bearer(user.client)
    assert user.client.get("/api/v1/strategies", headers=headers).get_json() == {"strategies": []}
    created = user.client.post(
        "/api/v1/strategies",
        headers=headers,
        json={"name": "Golden cross", "description": "50/200", "rules": "fast=50 slow=200"},
    )
    assert created.status_code == 201
    body = created.get_json()
    assert set(body) == {"id", "name", "description", "rules", "created_at"}
    assert body["name"] == "Golden cross" and body["rules"] == "fast=50 slow=200"
    listed = user.client.get("/api/v1/strategies", headers=headers).get_json()["strategies"]
    assert listed == [body]
    assert "Golden cross" in user.client.get("/strategies/").get_data(as_text=True)


def test_bad_input_is_a_400_naming_the_problem(member):
    user = member("pro")
    headers = bearer(user.client)
    cases = [
        ([1, 2], "invalid_json"),
        ({}, "missing_field"),
        ({"name": 7}, "invalid_field"),
        ({"name": "x" * 121}, "invalid_field"),
        ({"name": "x", "rules": "fast=9 slow=3"}, "invalid_rules"),
        ({"name": "x", "rules": "garbage"}, "invalid_rules"),
    ]
    for payload, code in cases:
        response = user.client.post("/api/v1/strategies", headers=headers, json=payload)
        assert response.status_code == 400, (payload, response.get_json())
        assert set(response.get_json()) == {"error", "message"} and response.get_json()["error"] == code


def test_over_the_limit_is_upgrade_required_json(member, seeded):
    with seeded.app_context():  # a Pro catalog with a strategy cap, as an operator could seed one
        pro = db.session.scalar(sa.select(SubscriptionPlan).where(SubscriptionPlan.name == "pro"))
        feature = next(f for f in pro.features if f.key == "strategies_max")
        feature.kind, feature.limit_value = "limit", 30
        db.session.commit()
    user = member("pro")
    user.strategies(30)
    response = user.client.post("/api/v1/strategies", headers=bearer(user.client), json={"name": "third"})
    assert response.status_code == 403
    body = response.get_json()
    assert body["error"] == "upgrade_required" and body["feature"] == "strategies_max"
    assert body["required_plan"] is None  # no plan allows 31
    assert body["message"] == "The Pro plan includes 30 strategies. No plan includes more."


def test_the_api_needs_a_token_not_the_session_cookie(member):
    user = member("pro")  # logged in on the browser session
    response = user.client.get("/api/v1/strategies")
    assert response.status_code == 401 and response.get_json()["error"] == "authorization_required"
