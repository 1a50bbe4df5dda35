"""Production hardening: security headers and CSP everywhere, HTTPS redirect and HSTS in production only,
ProxyFix behind the load balancer, cookie flags, Sentry's redaction."""

from __future__ import annotations

import pytest

from app import create_app
from app.logging import REDACTED
from app.security import origin_of, sentry_before_send
from tests.conftest import make_config
from tests.test_config import clean_env, production_env  # noqa: F401  (fixture re-exported for these tests)

#: A made-up live key, written in two parts so that no secret-shaped literal sits in the repository.
FAKE_LIVE_KEY = "sk_live" + "_abcdefghijklmnop"


def csp_directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2] for part in policy.split(";") if part.strip()}


def test_pages_carry_the_security_headers_and_the_csp(client, seeded):
    response = client.get("/pricing")
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    csp = csp_directives(response)
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["img-src"] == "'self' data:"
    assert csp["object-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    # Forms post to us; we 303 to Stripe's hosted pages (or the emulator here), which form-action must allow.
    emulator = origin_of(client.application.config["STRIPE_API_BASE"])
    assert csp["form-action"] == f"'self' https://checkout.stripe.com https://billing.stripe.com {emulator}"


def test_development_serves_plain_http_without_hsts(client, seeded):
    response = client.get("/pricing")
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


def test_the_emulator_address_in_form_action_follows_stripe_api_base(clean_env, migrated_database, redis_url):  # noqa: F811
    app = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE="http://127.0.0.1:40123/v1"))
    response = app.test_client().get("/healthz")
    assert csp_directives(response)["form-action"].endswith("https://billing.stripe.com http://127.0.0.1:40123")
    default = create_app(make_config(migrated_database, redis_url))  # the emulator's default address
    response = default.test_client().get("/healthz")
    assert csp_directives(response)["form-action"].endswith("https://billing.stripe.com http://127.0.0.1:12111")


def test_session_cookie_is_httponly_and_samesite_but_not_secure_outside_production(client, seeded, auth):
    response = auth.signup()
    cookie = next(v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie


@pytest.fixture
def production_app(clean_env, migrated_database, redis_url, seeded):  # noqa: F811
    app = create_app(production_env(DATABASE_URL=migrated_database, REDIS_URL=redis_url))
    yield app
    from app.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def test_production_redirects_plain_http_to_https(production_app):
    response = production_app.test_client().get("/pricing?plan=pro", base_url="http://billing.example.com")
    assert response.status_code == 301
    assert response.headers["Location"] == "https://billing.example.com/pricing?plan=pro"


def test_production_sends_hsts_over_https(production_app):
    response = production_app.test_client().get("/pricing", base_url="https://billing.example.com")
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "127.0.0.1:12111" not in response.headers["Content-Security-Policy"]  # no emulator in production


def test_production_trusts_the_load_balancer_for_scheme_host_and_client(production_app):
    client = production_app.test_client()
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "billing.example.com",
        "X-Forwarded-For": "198.51.100.7",
    }
    response = client.get("/pricing", headers=headers, environ_overrides={"REMOTE_ADDR": "10.0.0.2"})
    assert response.status_code == 200  # https as far as the app knows: no redirect
    assert "Strict-Transport-Security" in response.headers
    # The client is the forwarded address, so /metrics refuses a public visitor coming through the balancer.
    assert client.get("/metrics", headers=headers, environ_overrides={"REMOTE_ADDR": "10.0.0.2"}).status_code == 403
    # and accepts a scrape from inside the network.
    assert client.get("/metrics", environ_overrides={"REMOTE_ADDR": "10.0.0.9"}).status_code == 200


def test_production_cookies_are_secure(production_app):
    assert production_app.config["SESSION_COOKIE_SECURE"] is True
    assert production_app.config["REMEMBER_COOKIE_SECURE"] is True
    assert production_app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert production_app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_probes_answer_plain_http_in_production(production_app, path):
    response = production_app.test_client().get(path, base_url="http://10.0.0.5:8000")
    assert response.status_code == 200, response.status_code
    assert "Strict-Transport-Security" not in response.headers


def test_proxy_settings_are_configurable(clean_env, migrated_database, redis_url):  # noqa: F811
    app = create_app(
        make_config(migrated_database, redis_url, TRUST_PROXY="true", PROXY_FIX_X_FOR="2", PROXY_FIX_X_HOST="0")
    )
    response = app.test_client().get(
        "/metrics",
        headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.3, 10.0.0.4"},
        environ_overrides={"REMOTE_ADDR": "10.0.0.1"},
    )
    assert response.status_code == 200  # two proxies trusted: the client is 10.0.0.3
    untrusted = create_app(make_config(migrated_database, redis_url))
    assert (
        untrusted.test_client().get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    )  # header ignored: loopback


def test_sentry_events_are_redacted_like_the_logs():
    event = {
        "request": {
            "headers": {"Authorization": "Bearer abc", "User-Agent": "curl"},
            "cookies": {"session": "xyz"},
            "data": {"password": "hunter2", "email": "a@example.com"},
        },
        "exception": {
            "values": [{"type": "CardError", "value": "card 4242424242424242 declined, key sk_live" + "_abcdef12345"}]
        },
        "extra": {"stripe_secret_key": "sk_live" + "_abcdef12345"},
    }
    cleaned = sentry_before_send(event, {})
    assert cleaned["request"]["headers"] == {"Authorization": REDACTED, "User-Agent": "curl"}
    assert cleaned["request"]["cookies"] == REDACTED
    assert cleaned["request"]["data"] == {"password": REDACTED, "email": "a@example.com"}
    assert cleaned["exception"]["values"][0]["value"] == f"card {REDACTED} declined, key {REDACTED}"
    assert cleaned["extra"]["stripe_secret_key"] == REDACTED


def test_sentry_reports_an_unhandled_error_without_secrets(migrated_database, redis_url):
    import sentry_sdk

    sent = []

    class Capture(sentry_sdk.transport.Transport):
        def capture_envelope(self, envelope):
            sent.extend(item.payload.json for item in envelope.items if item.payload.json)

    app = create_app(make_config(migrated_database, redis_url, SENTRY_DSN="https://public@sentry.example.com/1"))

    @app.get("/boom")
    def boom():
        raise RuntimeError("Stripe said no to " + FAKE_LIVE_KEY)

    client = sentry_sdk.get_client()
    assert client.is_active() and client.options["send_default_pii"] is False
    client.transport = Capture(client.options)
    try:
        assert app.test_client().get("/boom", headers={"Authorization": "Bearer secret-token"}).status_code == 500
        sentry_sdk.flush()
    finally:
        sentry_sdk.init(dsn=None)  # later tests run without Sentry
    assert sent, "Sentry received nothing"
    text = repr(sent)
    assert "RuntimeError" in text
    assert FAKE_LIVE_KEY not in text and "secret-token" not in text


def test_sentry_without_tracing_leaves_the_engines_statements_unwatched(migrated_database, redis_url):
    """Sentry's SQLAlchemy integration listens on every engine of the process (a breadcrumb per statement): the
    log-in check then took Core's slower path on every logged-in page — here, in every later test of the process."""
    import sentry_sdk

    from app.extensions import db, statements_listened_for

    app = create_app(make_config(migrated_database, redis_url, SENTRY_DSN="https://public@sentry.example.com/1"))
    try:
        assert sentry_sdk.get_client().is_active()
        with app.app_context(), db.engine.connect() as connection:
            assert not statements_listened_for(connection)
    finally:
        sentry_sdk.init(dsn=None)  # later tests run without Sentry
