"""The steps every request goes through (rate limiter, CORS, session, request line), counted rather than timed: a
step with nothing to do for a request does none of its work, and what each step answers is unchanged."""

from __future__ import annotations

import logging
import time
import uuid

import flask_cors.core
from flask_limiter import Limiter
from flask_login import LoginManager
from limits import parse
from limits.storage import RedisStorage
from structlog.processors import StackInfoRenderer
from werkzeug.sansio import http

from app import create_app
from app.extensions import HitWindowRateLimiter, limiter
from app.logging import _CLEAN_TEXTS, REDACTED, EventWriter, may_hold_secret, new_request_id, redact, redact_text
from tests.conftest import make_config
from tests.ops.test_request_line import only_our_handlers
from tests.perf.test_request_path import PASSWORD, calls_to, tokens

STRIPE_KEY = "sk_live" + "_51MiddlewareSteps8ZxYwVuTs"


def api_user(seeded, client, auth, email: str) -> dict[str, str]:
    """A signed-up user's bearer header."""
    auth.signup(email, PASSWORD)
    auth.logout()
    return {"Authorization": f"Bearer {tokens(client, email)['access_token']}"}


def test_a_route_without_limits_leaves_the_rate_limiter_alone(seeded, client):
    """No limit applies to the pricing page: Flask-Limiter's per-request state is never created, so its header and
    teardown steps (which would create it to find it empty) and the storage are not reached."""
    client.get("/pricing")
    with calls_to(Limiter.context.fget, RedisStorage.incr, RedisStorage.get, RedisStorage.get_expiry) as counted:
        response = client.get("/pricing")
    assert response.status_code == 200
    assert not any(name.startswith("X-RateLimit") or name == "Retry-After" for name in response.headers.keys())
    assert sum(counted.values()) == 0, counted


def test_a_limited_route_answers_its_headers_from_its_own_hit(seeded, client, auth):
    """The per-user API limit: the hit's script brings back its window, so the X-RateLimit headers and Retry-After
    cost no GET or TTL of the counter (one of each per request before), and say what they said."""
    assert isinstance(limiter.limiter, HitWindowRateLimiter)
    seeded.config["RATELIMIT_API"] = "5 per minute"
    headers = api_user(seeded, client, auth, "limited@example.com")
    seen = []
    with calls_to(RedisStorage.get, RedisStorage.get_expiry, HitWindowRateLimiter.hit) as counted:
        for _ in range(6):
            response = client.get("/api/v1/me", headers=headers)
            seen.append((response.status_code, response.headers))
    assert counted["HitWindowRateLimiter.hit"] == 6
    assert counted["RedisStorage.get"] == counted["RedisStorage.get_expiry"] == 0
    assert [status for status, _ in seen] == [200] * 5 + [429]
    assert [h["X-RateLimit-Limit"] for _, h in seen] == ["5"] * 6
    assert [h["X-RateLimit-Remaining"] for _, h in seen] == ["4", "3", "2", "1", "0", "0"]
    now = time.time()
    for status, answered in seen:
        assert now < int(answered["X-RateLimit-Reset"]) <= now + 61
        # Flask-Limiter's figure, truncated; the 429's is its page's, rounded up (never shorter than the wait)
        assert 0 <= int(answered["Retry-After"]) <= (61 if status == 429 else 60)


def test_a_window_not_hit_in_this_request_is_read_from_redis(app):
    """Outside a request, or for a key this request did not hit, the window is Redis' own."""
    strategy = limiter.limiter
    assert isinstance(strategy, HitWindowRateLimiter)
    item = parse("3 per minute")
    strategy.hit(item, "test", "outside")
    reset, remaining = strategy.get_window_stats(item, "test", "outside")
    assert remaining == 2 and time.time() < reset <= time.time() + 61
    strategy.clear(item, "test", "outside")
    assert strategy.get_window_stats(item, "test", "outside").remaining == 3


def test_cors_matching_runs_only_on_api_paths(seeded, client):
    """flask-cors' resource matching is for the API's paths; a page is answered without it (and without CORS
    headers, as before), an API path still gets it, and so does a path that unquotes into the API's."""
    origin = {"Origin": "https://app.example.com"}
    with calls_to(flask_cors.core.try_match_pattern) as counted:
        page = client.get("/pricing", headers=origin)
    assert counted["try_match_pattern"] == 0
    assert page.status_code == 200 and "Access-Control-Allow-Origin" not in page.headers
    with calls_to(flask_cors.core.try_match_pattern) as counted:
        client.get("/api/v1/openapi.json", headers=origin)
        client.get("/%2561pi/v1/nothing", headers=origin)
    assert counted["try_match_pattern"] >= 2


def test_a_request_without_cookies_parses_none(seeded, client):
    """No Cookie header: the session is a new empty one, and the visitor's page is chosen, without parsing the
    header (an empty one)."""
    client.get("/pricing")
    client._cookies.clear()
    with calls_to(http.parse_cookie) as counted:
        assert client.get("/pricing").status_code == 200
    assert counted["parse_cookie"] == 0


def test_new_request_ids_are_uuid4_hex():
    ids = {new_request_id() for _ in range(200)}
    assert len(ids) == 200
    for request_id in ids:
        parsed = uuid.UUID(hex=request_id)
        assert parsed.hex == request_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_the_request_line_builds_no_uuid_and_skips_the_stack_renderer(seeded, client):
    """The request id is made from random bytes directly, and the line (no stack_info, no exc_info) does not go
    through the stack and exception renderers; both still run for a line that has their key (tests/ops)."""
    client.get("/pricing")
    with only_our_handlers() as (as_json, _, _records):
        response = client.get("/pricing")
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32 and uuid.UUID(request_id).version == 4
    assert [r["request_id"] for r in as_json.records()] == [request_id]
    # The id alone (a request may still make uuid4 calls of others': Sentry's trace ids, once a test set it up).
    with calls_to(uuid.uuid4) as counted:
        new_request_id()
    assert counted["uuid4"] == 0
    # The line alone (other events of a request, from loggers an earlier test's logging set-up left disabled, may
    # still run structlog's processors on their way to nowhere).
    with only_our_handlers() as (as_json, _, _records), calls_to(StackInfoRenderer.__call__) as counted:
        EventWriter("app.request").log(logging.INFO, "request_completed", method="GET", path="/pricing", status=200)
    assert [r["path"] for r in as_json.records()] == ["/pricing"]
    assert counted["StackInfoRenderer.__call__"] == 0


def test_a_repeated_clean_text_is_checked_once_and_secrets_are_still_redacted():
    """Event names, logger names and paths repeat line after line: once found clean, a short text is not scanned
    again; a text holding a secret is never remembered as clean, and the memory is bounded."""
    event = {"event": "page_served", "path": "/pricing/yearly", "key": STRIPE_KEY}
    redact(None, "info", dict(event))
    with calls_to(may_hold_secret) as counted:
        again = redact(None, "info", dict(event))
    assert counted["may_hold_secret"] == 2  # the event's texts at once (one may hold a secret), then the key's alone
    assert again == {"event": "page_served", "path": "/pricing/yearly", "key": REDACTED}
    assert redact_text(f"token {STRIPE_KEY}") == f"token {REDACTED}"
    for n in range(5000):
        redact_text(f"line {n}")
    assert len(_CLEAN_TEXTS) <= 4096


def test_a_visitor_leaves_the_remember_me_step_alone_and_a_member_keeps_it(seeded, client, auth):
    """An empty session has no remember-me operation pending: Flask-Login's step is not run for a visitor, nor for
    a logged-in member whose session holds none (after the log-in's own page); it is for a session holding one, and
    for everyone when every request refreshes the cookie."""
    client.get("/pricing")
    with calls_to(LoginManager._update_remember_cookie) as counted:
        client.get("/pricing")
    assert counted["LoginManager._update_remember_cookie"] == 0
    seeded.config["REMEMBER_COOKIE_REFRESH_EACH_REQUEST"] = True
    with calls_to(LoginManager._update_remember_cookie) as counted:
        client.get("/pricing")
    assert counted["LoginManager._update_remember_cookie"] == 1
    seeded.config["REMEMBER_COOKIE_REFRESH_EACH_REQUEST"] = False
    auth.signup("remembered@example.com")
    with calls_to(LoginManager._update_remember_cookie) as counted:
        assert client.get("/account").status_code == 200
    assert counted["LoginManager._update_remember_cookie"] == 0
    with client.session_transaction() as session:
        session["_remember"] = "clear"
    with calls_to(LoginManager._update_remember_cookie) as counted:
        assert client.get("/account").status_code == 200
    assert counted["LoginManager._update_remember_cookie"] == 1


def test_a_prefix_with_pattern_characters_keeps_cors_matching_on_every_path(migrated_database, redis_url):
    """flask-cors reads `PREFIX/*` as a pattern: with a `.` in the prefix it matches more paths than start with it,
    so no path is answered without its matching."""
    dotted = create_app(make_config(migrated_database, redis_url, API_PREFIX="/api/v1.0"))
    with calls_to(flask_cors.core.try_match_pattern) as counted:
        dotted.test_client().get("/pricing", headers={"Origin": "https://app.example.com"})
    assert counted["try_match_pattern"] >= 1
