"""Production hardening: the proxy in front, HTTPS, security headers and CSP, Sentry.

- ProxyFix trusts the load balancer's X-Forwarded-For/Proto/Host (in production, or with TRUST_PROXY=true), so
  `request.remote_addr` is the client, `request.is_secure` is true behind TLS termination, and url_for builds
  https URLs. The PROXY_FIX_X_* settings say how many proxies set each header.
- flask-talisman redirects plain HTTP to HTTPS and sends HSTS (production only), and sends the CSP and the other
  security headers everywhere, so development and the browser tests see the policy production enforces.
  `/healthz` and `/metrics` keep answering plain HTTP: load balancers and Prometheus probe them inside the network.
- Sentry (sentry-sdk) when SENTRY_DSN is set: no PII, and the log redaction applied to every event.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import sentry_sdk
from flask import Flask, abort, request
from flask_talisman import Talisman
from sentry_sdk.integrations.flask import FlaskIntegration
from werkzeug.middleware.proxy_fix import ProxyFix

from app.logging import redact_value

#: Where our forms' POSTs are redirected to (303 to Checkout or the Customer Portal). Chromium applies
#: form-action to the redirects that follow a submission, so these hosts must be allowed.
STRIPE_REDIRECT_ORIGINS = ("https://checkout.stripe.com", "https://billing.stripe.com")
#: The bundled Stripe emulator's default address (see DESIGN.md), allowed in development and testing.
EMULATOR_DEFAULT_BASE = "http://127.0.0.1:12111"
#: Endpoints answered over plain HTTP even when HTTPS is forced.
PLAIN_HTTP_ENDPOINTS = frozenset({"health.healthz", "metrics.scrape"})


class SiteTalisman(Talisman):
    """Talisman whose HTTPS redirect spares the probe endpoints.

    Done here rather than with talisman's per-view decorator, which stores its defaults on the shared view
    function, so the first app built in a process (tests build many) would impose its policy on the others.
    """

    def __init__(self, app: Flask, plain_http_endpoints: frozenset[str], **options: Any):
        self.plain_http_endpoints = plain_http_endpoints
        super().__init__(app, **options)

    def _force_https(self):
        if request.endpoint in self.plain_http_endpoints:
            return None
        return super()._force_https()


def origin_of(url: str | None) -> str | None:
    """`http://127.0.0.1:12111/v1` -> `http://127.0.0.1:12111`."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(config: dict[str, Any]) -> dict[str, str]:
    """Only our own scripts, styles and images (no inline code), forms to us and to Stripe's hosted pages."""
    form_targets = ["'self'", *STRIPE_REDIRECT_ORIGINS]
    emulator = origin_of(config.get("STRIPE_API_BASE"))
    if emulator is None and config["ENVIRONMENT"] != "production":
        emulator = EMULATOR_DEFAULT_BASE
    if emulator:
        form_targets.append(emulator)
    return {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "frame-ancestors": "'none'",
        "form-action": " ".join(form_targets),
    }


def register_proxy_fix(app: Flask) -> None:
    """Trust the load balancer's X-Forwarded-* headers (production, or TRUST_PROXY=true)."""
    config = app.config
    if config["ENVIRONMENT"] == "production" or config.get("TRUST_PROXY"):
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=config["PROXY_FIX_X_FOR"],
            x_proto=config["PROXY_FIX_X_PROTO"],
            x_host=config["PROXY_FIX_X_HOST"],
            x_port=config["PROXY_FIX_X_PORT"],
            x_prefix=config["PROXY_FIX_X_PREFIX"],
        )


def register_security_headers(app: Flask) -> None:
    """HTTPS redirect and HSTS in production; CSP, frame, referrer and content-type headers everywhere."""
    production = app.config["FORCE_HTTPS"]
    app.extensions["talisman"] = SiteTalisman(
        app,
        plain_http_endpoints=PLAIN_HTTP_ENDPOINTS,
        force_https=production,
        force_https_permanent=True,
        strict_transport_security=production,
        strict_transport_security_max_age=365 * 24 * 3600,
        strict_transport_security_include_subdomains=True,
        content_security_policy=content_security_policy(app.config),
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        session_cookie_secure=app.config["SESSION_COOKIE_SECURE"],
        session_cookie_http_only=True,
        session_cookie_samesite=app.config.get("SESSION_COOKIE_SAMESITE", "Lax"),
    )


def sentry_before_send(event: Any, hint: dict[str, Any]) -> Any:
    """The log redaction, applied to a whole Sentry event (request, extra, breadcrumbs, exception messages)."""
    return redact_value(event)


def init_sentry(app: Flask) -> bool:
    """Report unhandled errors to Sentry when SENTRY_DSN is set; True when it was set up."""
    dsn = app.config.get("SENTRY_DSN")
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        integrations=[FlaskIntegration()],
        environment=app.config["ENVIRONMENT"],
        send_default_pii=False,
        traces_sample_rate=app.config.get("SENTRY_TRACES_SAMPLE_RATE", 0.0),
        before_send=sentry_before_send,
        before_breadcrumb=lambda crumb, hint: redact_value(crumb),
    )
    return True


def register_nul_byte_guard(app: Flask) -> None:
    """A query string or form value holding a NUL byte is a 400 at the door.

    PostgreSQL text cannot store NUL, so such a value would otherwise reach a query and fail there as a 500. The
    JSON API checks its fields itself (`string_field`); its bodies and the webhook's raw body are not read here.
    """
    api_prefix = app.config["API_PREFIX"] + "/"

    @app.before_request
    def refuse_nul_bytes():
        if request.path.startswith(api_prefix):
            return None
        sources = [request.args]
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sources.append(request.form)
        if any("\x00" in value for source in sources for _, values in source.lists() for value in values):
            abort(400)
        return None


def register_hardening(app: Flask) -> None:
    register_proxy_fix(app)
    register_nul_byte_guard(app)
    register_security_headers(app)
    init_sentry(app)
