"""Production hardening: the proxy in front, HTTPS, security headers and CSP, hostile input, Sentry, sessions.

- ProxyFix trusts the load balancer's X-Forwarded-For/Proto/Host (in production, or with TRUST_PROXY=true), so
  `request.remote_addr` is the client, `request.is_secure` is true behind TLS termination, and url_for builds
  https URLs. The PROXY_FIX_X_* settings say how many proxies set each header. The headers are read only from a
  peer in TRUSTED_PROXIES (loopback and private networks unless configured): a client reaching the app directly
  cannot pick its own address (and so its rate-limit budget, or a place in METRICS_ALLOWED_NETWORKS).
- flask-talisman redirects plain HTTP to HTTPS (to APP_BASE_URL, never to the request's Host header) and sends
  HSTS (production only), and sends the CSP and the other security headers everywhere, so development and the
  browser tests see the policy production enforces.
  `/healthz` and `/metrics` keep answering plain HTTP: load balancers and Prometheus probe them inside the network.
- Hostile input is a 4xx at the door: a path with control characters (before anything logs it), a NUL in a query
  or form value, an `<int:…>` path id beyond PostgreSQL's integer (no route: 404).
- Responses made for a signed-in person (a logged-in page, an API answer to a token) are `Cache-Control: no-store`.
- The session user is loaded only while the cookie's server-side session is live (`load_session_user`).
- Sentry (sentry-sdk) when SENTRY_DSN is set: no PII, and the log redaction applied to every event.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections.abc import Iterable
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import sentry_sdk
from flask import Flask, abort, current_app, redirect, request, session
from flask.globals import _cv_request, request_ctx
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask.wrappers import Request, Response
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadRequest
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from app.logging import redact_value
from app.models import User
from app.services import viewer

#: Where our forms' POSTs are redirected to (303 to Checkout or the Customer Portal). Chromium applies
#: form-action to the redirects that follow a submission, so these hosts must be allowed.
STRIPE_REDIRECT_ORIGINS = ("https://checkout.stripe.com", "https://billing.stripe.com")
#: The bundled Stripe emulator's default address, allowed in development and testing.
EMULATOR_DEFAULT_BASE = "http://127.0.0.1:12111"
#: Endpoints answered over plain HTTP even when HTTPS is forced.
PLAIN_HTTP_ENDPOINTS = frozenset({"health.healthz", "metrics.scrape"})
#: The peers whose X-Forwarded-* headers are read unless TRUSTED_PROXIES says otherwise: loopback and private
#: networks, where a load balancer sits; a client on the internet reaching the app directly is never among them.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
#: The largest id a path may name: PostgreSQL's `integer`, the type of every id column.
MAX_PATH_ID = 2**31 - 1
#: Where the browser session keeps the id of its server-side `AuthSession` row.
SESSION_ID_KEY = "_auth_session"


class SiteTalisman(Talisman):
    """Talisman whose HTTPS redirect spares the probe endpoints, and whose headers are worked out once.

    The exemption is done here rather than with talisman's per-view decorator, which stores its defaults on the
    shared view function, so the first app built in a process (tests build many) would impose its policy on the
    others. The policy has no nonce and no view sets its own options, so every response gets the same headers:
    talisman's own code renders them once, at start-up, and each response copies them (HSTS only over HTTPS,
    as talisman does). A view given its own options (`talisman_view_options`) still gets talisman's full path.
    """

    def __init__(self, app: Flask, plain_http_endpoints: frozenset[str], **options: Any):
        self.plain_http_endpoints = plain_http_endpoints
        self._view_options_of: dict[str, bool] = {}
        super().__init__(app, **options)
        self.static_headers = self._render_headers(app, "http://localhost/")
        secure = self._render_headers(app, "https://localhost/")
        self.https_headers = {k: v for k, v in secure.items() if self.static_headers.get(k) != v}
        self._static_items = [(k, k.lower(), v) for k, v in self.static_headers.items()]
        self._https_items = [(k, k.lower(), v) for k, v in self.https_headers.items()]
        # What `AppendedHeaders` adds, when it wraps the app: (name, value) pairs, and the names they would replace.
        self._appended = [(k, v) for k, _, v in self._static_items]
        self._appended_https = self._appended + [(k, v) for k, _, v in self._https_items]
        self._names = frozenset(lowered for _, lowered, _ in self._static_items)
        self._names_https = self._names | {lowered for _, lowered, _ in self._https_items}
        self.appended_by_wsgi = False  # set by `register_security_headers` once `AppendedHeaders` wraps the app

    def _render_headers(self, app: Flask, url: str) -> dict[str, str]:
        """The headers talisman itself would set on a response to `url` of a view without options of its own."""
        response = app.response_class()
        with app.test_request_context(url):
            super()._set_response_headers(response)
        return {k: v for k, v in response.headers.items() if k not in ("Content-Type", "Content-Length")}

    def _has_view_options(self, this: Request | None = None) -> bool:
        """Whether the request's view was given options of its own (asked up to three times a request: once per
        endpoint is enough, as views are registered before the first request). `this`: the request, when the
        caller has it (each `request.…` is a context look-up)."""
        endpoint = (this if this is not None else request).endpoint or ""
        known = self._view_options_of
        if endpoint not in known:
            known[endpoint] = hasattr(self.app.view_functions.get(endpoint), "talisman_view_options")
        return known[endpoint]

    def _make_nonce(self):
        """No nonce in the policy: nothing to make, unless a view asked for one."""
        if self.content_security_policy_nonce_in or self._has_view_options(_cv_request.get().request):
            return super()._make_nonce()
        return None

    def _set_response_headers(self, response):
        """The precomputed headers (plus HSTS behind HTTPS); talisman's per-request rendering for a view's own.

        A response that has none of them yet (nearly all) leaves them to `AppendedHeaders`, which adds them to the
        headers the response is started with, past every look-up of the response's own headers (Werkzeug copies
        and checks each header, value by value, on its way out; Flask-Login, the session and the request line look
        some up): the client receives the same headers. One that has some of them (a view set its own) gets them
        here, its own replaced."""
        this = request._get_current_object()
        if self._has_view_options(this):
            return super()._set_response_headers(response)
        secure = bool(self._https_items) and (this.is_secure or this.headers.get("X-Forwarded-Proto") == "https")
        if self.appended_by_wsgi and self._names_https.isdisjoint([name.lower() for name, _ in response.headers]):
            this.environ[APPENDED_HEADERS] = self._appended_https if secure else self._appended
            return response
        put_headers(response.headers, self._static_items)
        if secure:
            put_headers(response.headers, self._https_items)
        return response

    def _force_https(self):
        """Plain HTTP is sent to the same path on APP_BASE_URL: the Host header is the client's to choose."""
        this = _cv_request.get().request
        if this.endpoint in self.plain_http_endpoints:
            return None
        force = self._get_local_options()["force_https"] if self._has_view_options(this) else self.force_https
        if not force or this.is_secure or self.app.debug:
            return None
        if this.headers.get("X-Forwarded-Proto", "http") == "https":
            return None
        base = (self.app.config.get("APP_BASE_URL") or "").rstrip("/")
        if not base:
            return super()._force_https()
        target = base + quote(request.path, safe="/%:@!$&'()*+,;=-._~")
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        return redirect(target, code=301 if self.force_https_permanent else 302)


#: The WSGI environ key under which a response's security headers wait for `AppendedHeaders`.
APPENDED_HEADERS = "ssb.appended_headers"


class AppendedHeaders:
    """WSGI middleware: the (name, value) pairs a request's after-request hook left in its environ under
    APPENDED_HEADERS (talisman's, `SiteTalisman._set_response_headers`) are added to the headers the app starts its
    response with. A response started without them (one made outside Flask, or whose hook put them on the response
    itself) is passed on as it is."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        def start(status, headers, exc_info=None):
            appended = environ.get(APPENDED_HEADERS)
            if appended:
                headers = [*headers, *appended]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def put_headers(headers: Headers, items: Iterable[tuple[str, str, str]]) -> None:
    """`headers[name] = value` for each (name, lowercased name, value): a header the response has is replaced, any
    other (nearly all) appended, without searching the response's headers once per name as `headers[name]` does.

    The values are talisman's own, rendered into a Werkzeug response at start-up (`SiteTalisman`), which checked
    them then: an appended one goes straight onto the headers' list (what `Headers.add` does after checking a value
    for newlines, each time)."""
    present = {name.lower() for name, _ in headers}
    appended = headers._list
    for name, lowered, value in items:
        if lowered in present:
            headers[name] = value
        else:
            appended.append((name, value))


#: The types of a session value that a remembered cookie may hold (`SiteSessionInterface`): immutable ones.
PLAIN_VALUES = frozenset({str, int, float, bool, type(None)})


class SiteSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, whose signing serializer is built once per set of keys, and whose cookies
    are verified once per process.

    Flask builds a new `URLSafeTimedSerializer` for every request, cookie or not; it holds nothing but its keys
    and settings (each signature makes its own signer), so one per SECRET_KEY (and fallbacks) serves them all. A
    changed key gets a new one.

    A logged-in browser sends the same cookie on every request until its session changes, and Flask verifies it
    each time: it derives the key, checks the signature, inflates and parses the payload and untags every value.
    Here a cookie whose signature was verified is remembered with its payload and the time it was signed, under
    the serializer of the keys that verified it and the whole Cookie header it came in: the same header again is
    not even parsed, and only has its age checked against the session lifetime, as itsdangerous checks it. A cookie never seen (or changed by one byte) is verified in full;
    a key rotation starts afresh. Only a payload of plain values (strings, numbers, booleans) is remembered, so
    that no request can change what the next one reads (a session holding flashed messages, a list, is not).
    This changes no decision about who is logged in: that is the server-side session's, checked on every request.
    """

    #: How many verified cookies are remembered per process before starting afresh.
    REMEMBERED_COOKIES = 4096

    def __init__(self) -> None:
        self._serializers: dict[tuple, URLSafeTimedSerializer] = {}
        #: (serializer, cookie name, Cookie header) -> (when the session cookie in it was signed, its payload)
        self._verified: dict[tuple[URLSafeTimedSerializer, str, str | None], tuple[int, dict[str, Any]]] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        """Flask's serializer for the app's current keys, remembered."""
        if not app.secret_key:
            return None
        keys = (*(app.config["SECRET_KEY_FALLBACKS"] or ()), app.secret_key)
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = super().get_signing_serializer(app)
            if len(self._serializers) > 8:  # keys rotated over and over: keep only the latest
                self._serializers.clear()
            self._serializers[keys] = serializer  # type: ignore[assignment]
        return serializer

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Flask's; a request without any cookie (a visitor's first page, a probe, an API call) gets a new empty
        session at once, as Flask would after parsing the absent Cookie header and finding no session cookie; a
        cookie verified before is not verified again while it is within the session lifetime."""
        header = request.environ.get("HTTP_COOKIE")
        if header is None and app.secret_key:
            return self.session_class()
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        name = self.get_cookie_name(app)
        max_age = int(app.permanent_session_lifetime.total_seconds())
        # Remembered under the whole Cookie header the browser sends with it: the same header again is not parsed.
        known = self._verified.get((serializer, name, header))
        if known is not None and 0 <= int(time.time()) - known[0] <= max_age:  # itsdangerous' own age test
            return self.session_class(known[1])
        value = request.cookies.get(name)
        if not value:
            return self.session_class()
        try:
            data, signed_at = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if isinstance(data, dict) and all(type(item) in PLAIN_VALUES for item in data.values()):
            if len(self._verified) >= self.REMEMBERED_COOKIES:
                self._verified.clear()
            self._verified[(serializer, name, header)] = (int(signed_at.timestamp()), data)
        return self.session_class(data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Flask's, with its commonest cases made cheap: a session that sets no cookie — an empty one nobody changed
        (a visitor's), or a logged-in one this request did not change (SESSION_REFRESH_EACH_REQUEST off: nothing to
        refresh) — only adds `Vary: Cookie` if it was read, which Flask does by parsing the Vary header into a set,
        after working out the cookie's settings it then does not use."""
        if session.modified or (session and self.should_set_cookie(app, session)):
            return super().save_session(app, session, response)
        if session.accessed:
            add_vary_cookie(response)
        return None


def add_vary_cookie(response: Response) -> None:
    """`response.vary.add("Cookie")`, without parsing the header when there is none yet (most responses)."""
    if response.headers.getlist("Vary"):  # getlist: a missing header costs no KeyError
        response.vary.add("Cookie")
    else:  # none yet: appended, as `headers["Vary"] = "Cookie"` would after searching for one again
        response.headers._list.append(("Vary", "Cookie"))


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


def parse_networks(value: str | Iterable[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`"10.0.0.0/8, 192.0.2.7"` (or a list of such) -> networks; None -> DEFAULT_TRUSTED_PROXIES."""
    if value is None:
        value = DEFAULT_TRUSTED_PROXIES
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return [ipaddress.ip_network(item, strict=False) for item in items]


class TrustedProxyFix:
    """ProxyFix applied only when the connecting peer is a trusted proxy; anyone else's X-Forwarded-* is ignored."""

    def __init__(self, wsgi_app, trusted: list, **hops: int):
        self.wsgi_app = wsgi_app
        self.proxied = ProxyFix(wsgi_app, **hops)
        self.trusted = tuple(trusted)
        # The answer per peer address, remembered: the peers of a server behind a load balancer are few.
        self.peer_is_trusted = functools.lru_cache(maxsize=4096)(self._in_trusted_network)

    def _in_trusted_network(self, address: str | None) -> bool:
        """Whether `address` (REMOTE_ADDR) is in a trusted network."""
        try:
            peer = ipaddress.ip_address((address or "").split("%")[0])
        except ValueError:
            return False
        return any(peer in network for network in self.trusted if network.version == peer.version)

    def __call__(self, environ, start_response):
        if self.peer_is_trusted(environ.get("REMOTE_ADDR")):
            return self.proxied(environ, start_response)
        return self.wsgi_app(environ, start_response)


def register_proxy_fix(app: Flask) -> None:
    """Trust the load balancer's X-Forwarded-* headers (production, or TRUST_PROXY=true), from TRUSTED_PROXIES only."""
    config = app.config
    if config["ENVIRONMENT"] == "production" or config.get("TRUST_PROXY"):
        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            parse_networks(config.get("TRUSTED_PROXIES")),
            x_for=config["PROXY_FIX_X_FOR"],
            x_proto=config["PROXY_FIX_X_PROTO"],
            x_host=config["PROXY_FIX_X_HOST"],
            x_port=config["PROXY_FIX_X_PORT"],
            x_prefix=config["PROXY_FIX_X_PREFIX"],
        )


#: The C0 controls (CR, LF, NUL, …) and DEL.
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def has_control_character(text: str) -> bool:
    """CR, LF, NUL and the other C0 controls (and DEL): never part of a path, a redirect target or a log line."""
    return CONTROL_CHARACTER.search(text) is not None


class ControlCharacterGuard:
    """A 400 for a path holding control characters, before the app (and its request log) sees it."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        # PATH_INFO is the raw bytes as latin-1: a control character there is the same byte, and the UTF-8 the
        # app decodes it to has none that the raw bytes do not (every byte of a multi-byte sequence is >= 0x80).
        if has_control_character(environ.get("PATH_INFO", "")):
            return BadRequest("The path holds control characters.")(environ, start_response)
        return self.wsgi_app(environ, start_response)


class PostgresIntConverter(IntegerConverter):
    """`<int:…>` path ids that fit PostgreSQL's integer: a larger one matches no route (404), not a failing query."""

    def __init__(
        self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = None, signed: bool = False
    ) -> None:
        super().__init__(
            map, fixed_digits=fixed_digits, min=min, max=MAX_PATH_ID if max is None else max, signed=signed
        )


def safe_next(target: str | None, prefix: str = "/") -> str | None:
    """A same-site path under `prefix` to redirect to, or None: anything with a scheme, a host, a backslash or a
    control character (a header injection, or a 500 from the response headers) is refused."""
    if not target or not isinstance(target, str) or has_control_character(target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith(prefix) or target.startswith("//") or "\\" in target:
        return None
    return target


def may_be_logged_in() -> bool:
    """Whether Flask-Login could find a user for this request: a user id in the session, or a remember-me cookie
    (the app gives Flask-Login no request or header loader). False: `current_user` would be the anonymous user,
    and a page can say so without having Flask-Login load it."""
    if session.get("_user_id"):
        return True
    this = request._get_current_object()  # type: ignore[attr-defined]
    # No Cookie header, no cookie: its absence is seen without parsing an empty one.
    return "HTTP_COOKIE" in this.environ and (
        current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token") in this.cookies
    )


def load_session_user(user_id: str) -> User | None:
    """Flask-Login's loader: the cookie's user, only while its server-side session is live (not logged out, not
    ended by a password change or "log out everywhere", not expired). Checked in the database on every request,
    in the statement that also reads the user's subscriptions for the page (`viewer.logged_in_user`)."""
    if not (isinstance(user_id, str) and user_id.isascii() and user_id.isdigit() and 0 < int(user_id) <= MAX_PATH_ID):
        return None
    return viewer.logged_in_user(session.get(SESSION_ID_KEY), int(user_id))


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
    # Flask runs after-request hooks last-registered first: first in the list, talisman's runs after the app's own
    # (the request line's X-Request-ID, Cache-Control, Vary…), whose look-ups then search a response of two or three
    # headers rather than ten. (errors.py puts one more before it, for 429s only.)
    talisman = app.extensions["talisman"]
    hooks = app.after_request_funcs.setdefault(None, [])
    hooks.remove(talisman._set_response_headers)
    hooks.insert(0, talisman._set_response_headers)
    app.wsgi_app = AppendedHeaders(app.wsgi_app)  # type: ignore[method-assign]
    talisman.appended_by_wsgi = True


def sentry_before_send(event: Any, hint: dict[str, Any]) -> Any:
    """The log redaction, applied to a whole Sentry event (request, extra, breadcrumbs, exception messages)."""
    return redact_value(event)


def init_sentry(app: Flask) -> bool:
    """Report unhandled errors to Sentry when SENTRY_DSN is set; True when it was set up."""
    dsn = app.config.get("SENTRY_DSN")
    if not dsn:
        return False
    traces = app.config.get("SENTRY_TRACES_SAMPLE_RATE", 0.0)
    sentry_sdk.init(
        dsn=dsn,
        integrations=[FlaskIntegration()],
        # Without tracing, Sentry's SQLAlchemy integration only adds a breadcrumb per statement, through listeners
        # on every engine of the process: any listener sends the log-in check back to Core's execution (~75 µs
        # more per logged-in page, app.extensions.statements_listened_for). With traces, their spans are kept.
        disabled_integrations=[] if traces else [SqlalchemyIntegration()],
        environment=app.config["ENVIRONMENT"],
        send_default_pii=False,
        traces_sample_rate=traces,
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
        this = _cv_request.get().request  # no proxy look-up
        if this.path.startswith(api_prefix):
            return None
        query = this.query_string  # a NUL reaches request.args only as a raw byte or as %00
        sources = [this.args] if b"\x00" in query or b"%00" in query else []
        # No Content-Type, no form: its header is parsed only when there is one.
        if this.environ.get("CONTENT_TYPE") and this.mimetype in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            sources.append(this.form)
        if sources and any("\x00" in value for source in sources for _, values in source.lists() for value in values):
            abort(400)
        return None


#: What a response about someone's account says to caches: keep no copy, not even the browser's own (its Back
#: button after log-out on a shared computer) nor a proxy's.
PRIVATE_CACHE_CONTROL = "no-store"


def register_private_responses(app: Flask) -> None:
    """`Cache-Control: no-store` on every response made for a signed-in person: the pages of a logged-in browser
    session (account, billing, strategies, admin, and any other page it is shown, errors included) and the API's
    answers to a request bearing a token, or handing one out (`/auth/token`).

    Decided from the request alone, as the page cache does (`may_be_logged_in`): a request without a cookie (a
    visitor's pricing page, served from the page cache, a probe) costs nothing more and keeps its caching; static
    files keep theirs (Flask's) whoever asks. A visitor's page that shows a flashed message is one person's too
    (`shows_flashed_messages`): the log-in page after sign-up names the address just signed up with. So is every
    answer to a POST of a form that takes an address or a password (`answers_a_credentials_form`), whatever it is
    (a failed log-in's 400 repeats the typed address, a 429 or a CSRF refusal names none but costs nothing more),
    with or without a cookie.
    """
    api_prefix = app.config["API_PREFIX"]
    token_endpoints = frozenset({"api.issue_token", "api.refresh_token"})

    @app.after_request
    def keep_private_responses_out_of_caches(response: Response) -> Response:
        this = _cv_request.get().request
        environ = this.environ
        if this.path == api_prefix or this.path.startswith(api_prefix + "/"):
            private = "HTTP_AUTHORIZATION" in environ or this.endpoint in token_endpoints
        else:
            private = answers_a_credentials_form(this) or (
                "HTTP_COOKIE" in environ
                and this.endpoint != "static"
                and (may_be_logged_in() or shows_flashed_messages())
            )
        if private:
            response.headers["Cache-Control"] = PRIVATE_CACHE_CONTROL
        return response


#: The forms whose answer may repeat what was typed into them (an address) or whose typing is private (a password):
#: log-in, sign-up, password reset (asking for the link, choosing the new password) and the account's changes.
CREDENTIALS_FORM_ENDPOINTS = frozenset(
    {
        "account.login",
        "account.signup",
        "account.forgot_password",
        "account.reset_password",
        "account.change_email",
        "account.change_password",
    }
)


def answers_a_credentials_form(this: Request) -> bool:
    """Whether this request POSTs one of the `CREDENTIALS_FORM_ENDPOINTS` forms: its answer, a re-shown form
    with the typed address as much as a redirect, is that person's alone."""
    return this.method == "POST" and this.endpoint in CREDENTIALS_FORM_ENDPOINTS


def shows_flashed_messages() -> bool:
    """Whether this response's page took flashed messages out of the session to show them (Flask keeps what
    `get_flashed_messages` took on the request context)."""
    return bool(getattr(request_ctx, "flashes", None))


#: The answers of `refuse_cross_site_forms`: a form another site sent, and one whose browser named no site at all.
FOREIGN_FORM_MESSAGE = (
    "This form was sent from another site, so it was refused: open the page on this site and send the form from there."
)
UNKNOWN_SOURCE_MESSAGE = (
    "Your browser sent this form without saying which site it came from (no Origin or Referer header), so it was "
    "refused: allow this site to receive them, or try another browser."
)
DEFAULT_CSRF_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def register_same_origin_forms(app: Flask) -> None:
    """Over HTTPS, a form post (every CSRF-checked request: not the API, not Stripe's webhooks) must come from this
    site's own pages, as its `Origin` says, else its `Referer`; its CSRF token is checked as well (Flask-WTF).

    Flask-WTF's own HTTPS check (WTF_CSRF_SSL_STRICT) reads only the Referer, so a log-in from a browser that leaves
    it out (a privacy extension strips it; every current browser still sends Origin with a POST) was refused as an
    "expired" form. Here the Origin decides when there is one: this site's (APP_BASE_URL's, or the host asked) is
    accepted, any other refused. `Origin: null` (a sandboxed frame, a no-referrer page) names no site: the Referer
    then decides, and a post with neither is refused, each with a message that says why. WTF_CSRF_SSL_STRICT=false
    turns this check off with Flask-WTF's."""
    strict = app.config.get("WTF_CSRF_SSL_STRICT", True)
    app.config["WTF_CSRF_SSL_STRICT"] = False  # replaced by the check below, which also reads Origin

    @app.before_request
    def refuse_cross_site_forms():
        # The request from Flask's context variable: no proxy look-up on the every-request path (tests/perf).
        this = _cv_request.get().request
        config = app.config
        if (
            not strict
            or this.method not in config.get("WTF_CSRF_METHODS", DEFAULT_CSRF_METHODS)
            or not this.is_secure
            or not config.get("WTF_CSRF_ENABLED", True)
            or not config.get("WTF_CSRF_CHECK_DEFAULT", True)
            or not this.endpoint
            or app.extensions["csrf"]._is_exempt()
        ):
            return None
        own = {(origin_of(config.get("APP_BASE_URL")) or "").lower(), f"https://{this.host}".lower()}
        origin = this.headers.get("Origin")
        source = origin if origin and origin != "null" else origin_of(this.referrer)
        if source is None:
            refuse_form(UNKNOWN_SOURCE_MESSAGE)
        if source.lower() not in own:
            refuse_form(FOREIGN_FORM_MESSAGE)
        return None


class FormRefused(CSRFError):
    """A CSRF refusal that says why: answered 400 `csrf_failed` with its description (app/errors.py)."""


def refuse_form(message: str) -> NoReturn:
    """Refuse the form (400 `csrf_failed`), saying why."""
    raise FormRefused(message)


def register_hardening(app: Flask) -> None:
    """Every hardening step; runs before the blueprints are registered, so their `<int:…>` ids are bounded."""
    app.url_map.converters["int"] = PostgresIntConverter
    app.session_interface = SiteSessionInterface()
    register_proxy_fix(app)
    app.wsgi_app = ControlCharacterGuard(app.wsgi_app)  # type: ignore[method-assign]
    register_nul_byte_guard(app)
    register_same_origin_forms(app)
    register_private_responses(app)
    register_security_headers(app)
    init_sentry(app)
