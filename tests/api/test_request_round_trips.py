"""What one API call sends PostgreSQL, counted as psycopg sends it (BEGIN, each statement, COMMIT, ROLLBACK).

The token check reads the token's user and its live family in one statement, as the web log-in check reads a
browser session's (`viewer.token_user`): in autocommit when it is the request's first statement (no BEGIN, and
no ROLLBACK at the end for it), the user then made persistent from its columns, so that neither the token's user
lookup nor the view asks for the user again. A GET that reads one statement more reads it in autocommit too.
(Before, `/strategies`: BEGIN, the revocation check's user, `Session.get`'s user again, the view's statement,
ROLLBACK: five round trips, three statements.)
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuthSession
from tests.entitlements.conftest import Member
from tests.perf.test_webhook_queue_round_trips import wire_round_trips

PASSWORD = "correct horse"

#: Round trips of one call with a warm entitlement cache: the token check, then the view's own statement, read in
#: autocommit too (a GET that only reads opens no transaction on the server).
CEILINGS = {"/api/v1/strategies": 2, "/api/v1/me": 1, "/api/v1/billing/subscription": 2}


def bearer(client, email: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


@pytest.fixture
def pro(seeded, client, auth):
    """A Pro member's bearer header (no browser session: an API client sends its token alone), each route called
    once (the entitlement cache, the catalogue and the pool warm)."""
    member = Member(seeded, client, auth, "api-round-trips@example.com", "pro")
    member.strategies(2)
    headers = bearer(client, member.email)
    auth.logout()
    for path in CEILINGS:
        assert client.get(path, headers=headers).status_code == 200
    return headers


@pytest.mark.parametrize("path", list(CEILINGS))
def test_an_api_call_stays_within_its_round_trips(seeded, client, pro, path):
    with wire_round_trips(seeded, whole=True) as sent:
        response = client.get(path, headers=pro)
    assert response.status_code == 200, response.get_json()
    print(path, len(sent), *(text[:200] for text in sent), sep="\n  ")
    assert "BEGIN" not in sent and "ROLLBACK" not in sent and "COMMIT" not in sent, sent
    assert len(sent) <= CEILINGS[path], sent
    [check] = [text for text in sent if "auth_sessions" in text]  # the token's user and family: one statement
    assert sent[0] == check and "FROM users" in check


def test_the_gated_route_reads_the_user_once(seeded, client, pro):
    """The revocation check's user is the one the view gets: no second statement names the users table."""
    with wire_round_trips(seeded, whole=True) as sent:
        response = client.get("/api/v1/strategies", headers=pro)
    assert response.status_code == 200 and len(response.get_json()["strategies"]) == 2
    assert sum(1 for text in sent if "FROM users" in text) == 1, sent


def test_what_an_api_call_writes_after_the_token_check_is_in_a_transaction(seeded, client, pro):
    """A POST that writes begins its transaction at its first statement after the check, and commits it."""
    with wire_round_trips(seeded, whole=True) as sent:
        response = client.post("/api/v1/strategies", headers=pro, json={"name": "Written", "rules": "fast=5 slow=9"})
    assert response.status_code == 201, response.get_json()
    assert sent[0].startswith("SELECT") and sent[1] == "BEGIN" and "COMMIT" in sent, sent
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(sa.table("strategies"))) == 3


@pytest.mark.parametrize("ending", ["logout_everywhere", "expired"])
def test_the_token_check_still_refuses_an_ended_family(seeded, client, pro, ending):
    """(A deleted user's token: tests/security/test_api_attacks.py; a refresh token used twice:
    tests/api/test_auth_tokens.py.)"""
    ended = (
        {"revoked_at": sa.func.now(), "revoked_reason": "logout_everywhere"}
        if ending == "logout_everywhere"
        else {"expires_at": sa.func.now() - sa.text("interval '1 second'")}
    )
    with seeded.app_context():
        db.session.execute(sa.update(AuthSession).values(**ended))
        db.session.commit()
    response = client.get("/api/v1/strategies", headers=pro)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token" and response.get_json()["message"]
