"""What the request path does per request, counted rather than timed: the entitlement gate of an API route adds
no token check of its own (one cache read on a hit), and the shortcuts taken for speed leave every answer as it
was (a revoked or refresh token is still refused by a gated route)."""

from __future__ import annotations

from tests.entitlements.conftest import Member
from tests.perf.test_webhook_round_trips import round_trips

PASSWORD = "correct horse"


def tokens(client, email: str) -> dict:
    response = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def session_checks(sent: list[str]) -> int:
    """How many statements looked up the token's server-side session (one per token verification)."""
    return sum(1 for text in sent if "auth_sessions" in text)


def test_the_gate_reuses_the_token_check_the_route_already_made(seeded, client, auth):
    user = Member(seeded, client, auth, "gated@example.com", "pro")
    headers = {"Authorization": f"Bearer {tokens(client, user.email)['access_token']}"}
    assert client.get("/api/v1/strategies", headers=headers).status_code == 200  # warms the entitlement cache
    with round_trips(seeded) as ungated:
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    with round_trips(seeded) as gated:
        response = client.get("/api/v1/strategies", headers=headers)
    assert response.status_code == 200 and response.get_json() == {"strategies": []}
    assert session_checks(gated) == session_checks(ungated) >= 1, (gated, ungated)


def test_a_gated_route_still_refuses_revoked_and_refresh_tokens(seeded, client, auth):
    user = Member(seeded, client, auth, "refused@example.com", "pro")
    pair = tokens(client, user.email)
    refresh = client.get("/api/v1/strategies", headers={"Authorization": f"Bearer {pair['refresh_token']}"})
    assert refresh.status_code == 401
    access = {"Authorization": f"Bearer {pair['access_token']}"}
    assert client.get("/api/v1/strategies", headers=access).status_code == 200
    spent = {"Authorization": f"Bearer {pair['refresh_token']}"}
    assert client.post("/api/v1/auth/refresh", headers=spent).status_code == 200
    assert client.post("/api/v1/auth/refresh", headers=spent).status_code == 401  # reuse ends the whole family
    revoked = client.get("/api/v1/strategies", headers=access)
    assert revoked.status_code == 401 and revoked.get_json()["error"] == "invalid_token"
