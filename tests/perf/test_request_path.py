"""What the request path does per request, counted rather than timed: the entitlement gate of an API route adds
no token check of its own (one cache read on a hit), and the shortcuts taken for speed leave every answer as it
was (a revoked or refresh token is still refused by a gated route)."""

from __future__ import annotations

import collections
import contextlib
import sys

from flask import Response
from flask_login import LoginManager
from werkzeug.http import parse_set_header

from app.extensions import login_manager
from app.security import add_vary_cookie, put_headers
from tests.entitlements.conftest import Member
from tests.perf.test_webhook_round_trips import round_trips

PASSWORD = "correct horse"


@contextlib.contextmanager
def calls_to(*functions):
    """How many times each of `functions` (Python functions, by name) is called while the block runs."""
    names = {function.__code__: function.__qualname__ for function in functions}
    counted: collections.Counter[str] = collections.Counter()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in names:
            counted[names[frame.f_code]] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield counted
    finally:
        sys.setprofile(previous)


def tokens(client, email: str) -> dict:
    response = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def session_checks(sent: list[str]) -> int:
    """How many statements looked up the token's server-side session (one per token verification)."""
    return sum(1 for text in sent if "auth_sessions" in text)


def test_the_gate_reuses_the_token_check_the_route_already_made(seeded, client, auth):
    """An API client sends its token alone (no browser session): the per-user rate limit's key and the view both
    verify it, and its server-side session is looked up once."""
    user = Member(seeded, client, auth, "gated@example.com", "pro")
    headers = {"Authorization": f"Bearer {tokens(client, user.email)['access_token']}"}
    auth.logout()
    assert client.get("/api/v1/strategies", headers=headers).status_code == 200  # warms the entitlement cache
    with round_trips(seeded) as ungated:
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    with round_trips(seeded) as gated:
        response = client.get("/api/v1/strategies", headers=headers)
    assert response.status_code == 200 and response.get_json() == {"strategies": []}
    assert session_checks(gated) == session_checks(ungated) == 1, (gated, ungated)


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


def test_a_key_rotation_still_signs_and_reads_sessions_with_the_keys_in_force(seeded, client, auth):
    """The session serializer is built once per set of keys: a new SECRET_KEY drops the old sessions, and the old
    key kept in SECRET_KEY_FALLBACKS brings them back."""
    auth.signup("rotating@example.com")
    assert client.get("/account").status_code == 200
    cookie = client.get_cookie("session").value
    old_key = seeded.config["SECRET_KEY"]
    seeded.config["SECRET_KEY"] = "another key, long enough to sign sessions with"
    assert client.get("/account").status_code == 302  # the cookie's signature no longer verifies: log in again
    seeded.config["SECRET_KEY_FALLBACKS"] = [old_key]
    client.set_cookie("session", cookie)  # the redirect to the log-in page replaced it
    assert client.get("/account").status_code == 200


def test_a_nul_in_the_query_is_refused_raw_or_escaped_and_a_look_alike_is_not(seeded, client):
    assert client.get("/pricing", environ_overrides={"QUERY_STRING": "ref=a\x00b"}).status_code == 400
    assert client.get("/pricing?ref=%00").status_code == 400
    assert client.get("/pricing?ref=%2500").status_code == 200  # the text "%00", no NUL
    assert client.get("/pricing?ref=100").status_code == 200


def test_a_visitor_page_keeps_its_headers(seeded, client):
    """What the shortcuts must not drop: the security headers, the request id, and `Vary: Cookie` (the page is
    another one for a logged-in user, so a shared cache must not serve this one to them)."""
    response = client.get("/pricing")
    headers = response.headers
    assert response.status_code == 200
    assert "Cookie" in headers.get("Vary", "")
    assert len(headers["X-Request-ID"]) == 32
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    posted = client.post("/login", data={"email": "x@example.com", "password": "y"})
    assert posted.status_code == 400  # no CSRF token: still refused, now that GETs skip the exemption lists


def test_a_visitor_costs_no_session_identifier_and_a_member_keeps_session_protection(seeded, client, auth):
    """Flask-Login hashes the client's address and user agent (the session identifier) for session protection; an
    empty session has nothing to protect, so a visitor's request computes no hash, while a logged-in session seen
    from another browser is still marked not fresh (the "basic" protection)."""
    hashed: list[str] = []
    generate = login_manager._session_identifier_generator

    def counted() -> str:
        hashed.append(generate())
        return hashed[-1]

    login_manager._session_identifier_generator = counted
    try:
        assert client.get("/pricing").status_code == 200
        assert hashed == []
        auth.signup("protected@example.com")
        with client.session_transaction() as session:
            assert session["_fresh"] is True and session["_id"] in hashed
        hashed.clear()
        assert client.get("/account", headers={"User-Agent": "another browser"}).status_code == 200
    finally:
        login_manager._session_identifier_generator = generate
    assert len(hashed) == 1
    with client.session_transaction() as session:
        assert session["_fresh"] is False


def test_a_visitor_page_says_vary_cookie_without_parsing_the_vary_header(seeded, client):
    """A visitor's session is read but stays empty: the response gets `Vary: Cookie` (it differs for a logged-in
    user), written as such rather than through Flask's parsed header set."""
    assert client.get("/pricing").status_code == 200
    with calls_to(parse_set_header) as counted:
        response = client.get("/pricing")
    assert response.headers.getlist("Vary") == ["Cookie"]
    assert counted["parse_set_header"] == 0


def test_vary_cookie_joins_what_the_response_already_varies_on():
    response = Response("x", headers={"Vary": "Accept-Encoding"})
    add_vary_cookie(response)
    add_vary_cookie(response)
    assert response.headers.getlist("Vary") == ["Accept-Encoding, Cookie"]
    bare = Response("x")
    add_vary_cookie(bare)
    assert bare.headers.getlist("Vary") == ["Cookie"]


def test_security_headers_are_appended_past_the_response_and_a_views_own_is_replaced(app):
    """Talisman's headers reach the client once each: a response without any of them (nearly all) gets them as it
    is started (`AppendedHeaders`), so no header of the response is searched or set for them and Werkzeug copies
    none of them; a response that set one of its own gets talisman's value instead, never both."""
    talisman = app.extensions["talisman"]

    @app.get("/bench/own-frame-options")
    def own_frame_options():
        return Response("x", headers={"X-Frame-Options": "SAMEORIGIN"})

    client = app.test_client()
    https = {"base_url": "https://localhost", "headers": {"X-Forwarded-Proto": "https"}}
    client.get("/healthz", **https)
    with calls_to(put_headers) as fresh_counted:
        fresh = client.get("/healthz", **https)
    with calls_to(put_headers) as own_counted:
        own = client.get("/bench/own-frame-options", **https)
    expected = {**talisman.static_headers, **talisman.https_headers}
    assert fresh.status_code == 200 and own.status_code == 200
    for response in (fresh, own):
        assert {name: response.headers.getlist(name) for name in expected} == {k: [v] for k, v in expected.items()}
    assert fresh_counted["put_headers"] == 0 and own_counted["put_headers"] >= 1


def test_a_visitor_pricing_page_loads_no_user_and_a_member_still_gets_theirs(seeded, client, auth):
    """Nothing in a visitor's request can name a user (no session user id, no remember-me cookie): the page is the
    visitor's without Flask-Login loading the anonymous user; a logged-in member's page still names their plan."""
    assert client.get("/pricing").status_code == 200  # rendered once (the template asks for current_user), then kept
    with calls_to(LoginManager._load_user) as counted:
        visitor = client.get("/pricing")
    assert visitor.status_code == 200 and counted["LoginManager._load_user"] == 0
    auth.signup("member@example.com")
    with calls_to(LoginManager._load_user) as counted:
        member = client.get("/pricing")
    assert counted["LoginManager._load_user"] == 1
    assert member.get_data(as_text=True) != visitor.get_data(as_text=True)
