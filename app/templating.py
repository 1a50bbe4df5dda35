"""Jinja filters for money and dates, so templates never format numbers by hand; the templates' `url_for`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from flask import Flask, g, request, session
from flask.globals import request_ctx
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape
from sqlalchemy.exc import SQLAlchemyError

from app.services import viewer
from app.services.viewer import SubscriptionView

#: The sign of a negative amount: the minus sign, not a hyphen (`−$49.99`).
MINUS = "\u2212"
#: How a currency's amounts begin; any other currency is written with its ISO code (`CHF 19.99`).
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


def money(value: Decimal | int | str | None, cents: bool = False, whole: bool = False, currency: str = "usd") -> str:
    """`Decimal('19.99')` -> `$19.99`; with cents=True, `1999` -> `$19.99`; whole=True rounds to dollars
    (`$10,250`, for chart axes); a negative amount reads `−$5.00` (the minus sign U+2212, before the symbol);
    `currency` (Stripe's lower-case ISO code) picks the symbol, or the code itself (`CHF 1,250.00`)."""
    if value is None:
        return "—"
    amount = Decimal(value) / 100 if cents else Decimal(value)
    sign = MINUS if amount < 0 else ""
    code = (currency or "usd").lower()
    symbol = CURRENCY_SYMBOLS.get(code, code.upper() + " ")
    return f"{sign}{symbol}{abs(amount):,.{0 if whole else 2}f}"


def percent(value: Decimal | float | str | None, signed: bool = False) -> str:
    """A stored percentage as shown: `-13.56` -> `−13.56%` (the minus sign, as for money); with `signed`, a gain
    reads `+4.2%`; a missing value `—`."""
    if value is None or value == "":
        return "—"
    number = Decimal(str(value))
    sign = MINUS if number < 0 else ("+" if signed and number > 0 else "")
    return f"{sign}{abs(number)}%"


def date(value: datetime | dt.date | None) -> str:
    """`28 Dec 2026` in UTC (a calendar date, having no time zone, prints as it is)."""
    if value is None:
        return "—"
    if not isinstance(value, datetime):
        return value.strftime("%-d %b %Y")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%-d %b %Y")


def datetime_utc(value: datetime | None) -> str:
    """`28 Dec 2026, 14:05 UTC`: the date as `date` writes it, with the time of day, for logs and audit trails."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"{date(value)}, {value.astimezone(dt.UTC):%H:%M} UTC"


def payment_problem(user: Any = None) -> SubscriptionView | None:
    """The logged-in user's subscription whose payment failed (past due while Stripe retries, or unpaid), for the
    banner every page shows; None elsewhere and on the billing page, which says it in full. The layout hands over
    the user its context holds, which spares the `current_user` proxy's lookups."""
    if user is None:
        user = current_user._get_current_object()
    if not user.is_authenticated or request.endpoint == "billing.show_billing":
        return None
    try:
        subscription = viewer.live_subscription(user.id)  # read with the log-in check
    except SQLAlchemyError:  # an error page while the database is down still renders, without the banner
        return None
    if subscription is None or subscription.status not in ("past_due", "unpaid"):
        return None
    return subscription


#: The navigation's sections, (blueprint, endpoint, label) each, in the order the bar shows them: a visitor's,
#: a logged-in user's and an admin's. Built once; the layout loops over them.
VISITOR_NAV: tuple[tuple[str, str, str], ...] = (("pricing", "pricing.show_pricing", "Pricing"),)
MEMBER_NAV = VISITOR_NAV + (
    ("strategies", "strategies.list_strategies_page", "Strategies"),
    ("alerts", "alerts.edit_alerts", "Alerts"),
    ("account", "account.show_account", "Account"),
    ("billing", "billing.show_billing", "Billing"),
)
ADMIN_NAV = MEMBER_NAV + (("admin", "admin.show_dashboard", "Admin"),)


class SiteNav(NamedTuple):
    """What the layout's navigation needs of the user and the request, each read once per page."""

    user: Any  # the logged-in user, or Flask-Login's anonymous user
    signed_in: bool
    links: list[tuple[str, str, str]]  # (blueprint, URL, label) of each link the user may follow
    section: str | None  # the blueprint of the page: its link is the current one
    marks_active: bool  # False on the log-in page, where the link is current (aria) but not highlighted
    html: Markup = Markup()  # the navigation's markup (_site_nav.html), with this request's CSRF token


#: The navigation template, and what stands for the CSRF token in its markup until a request's token is put in
#: (no token holds a NUL).
SITE_NAV_TEMPLATE = "_site_nav.html"
TOKEN_PLACEHOLDER = "\x00csrf_token\x00"
#: How many navigations `site_navigation` keeps per app before starting afresh (a few per kind of visitor).
REMEMBERED_NAVS = 256


def site_navigation(app: Flask, url_for: Callable[..., str], csrf_token: Callable[[], str]) -> Callable[[Any], SiteNav]:
    """The templates' `site_nav`: the layout's navigation for this request, its URLs from the templates'
    `url_for` (remembered per app), its markup rendered once per app for each kind of navigation.

    Every page's layout asked the `request` proxy the same questions a dozen times (each a context lookup) and
    called a macro per link; one call answers them all. The layout hands over the user Flask-Login's context
    processor put in the template's context (the object, read once per render, not the proxy).

    The markup depends only on what the key holds: the request's script root and subdomain (its URLs), whether
    someone is logged in and is an admin (its links), the page's section and whether it is the log-in page. A
    logged-in user's log-out form carries the request's CSRF token, which is put into the remembered markup at
    its place; a visitor's navigation has no form, and asks for no token (nor touches the session). The links'
    URLs depend on the key too, so they are kept with the markup rather than built again on every page."""
    rendered: dict[tuple, tuple[list[tuple[str, str, str]], list[Markup]]] = {}

    def site_nav(user: Any) -> SiteNav:
        signed_in = bool(user.is_authenticated)
        admin = signed_in and bool(user.is_admin)
        ctx = _REQUEST_CONTEXT._get_current_object()
        req, adapter = ctx.request, ctx.url_adapter
        section, marks_active = req.blueprint, req.endpoint != "account.login"
        where = (adapter.script_name, adapter.subdomain) if adapter is not None else None
        key = (where, signed_in, admin, section, marks_active)
        kept = rendered.get(key)
        if kept is None:
            sections = (ADMIN_NAV if admin else MEMBER_NAV) if signed_in else VISITOR_NAV
            links = [(blueprint, url_for(endpoint), label) for blueprint, endpoint, label in sections]
            markup = app.jinja_env.get_template(SITE_NAV_TEMPLATE).render(
                nav=SiteNav(user, signed_in, links, section, marks_active),
                url_for=url_for,
                csrf_token=lambda: TOKEN_PLACEHOLDER,
            )
            kept = links, split_at_token(markup)
            if len(rendered) >= REMEMBERED_NAVS:
                rendered.clear()
            rendered[key] = kept
        links, parts = kept
        html = escape(csrf_token()).join(parts) if len(parts) > 1 else parts[0]
        return SiteNav(user, signed_in, links, section, marks_active, html)

    return site_nav


def split_at_token(markup: str) -> list[Markup]:
    """Markup rendered with TOKEN_PLACEHOLDER for the CSRF token, in the pieces between its tokens (rendered by
    the autoescaping environment: each piece is markup as it is)."""
    return [Markup(part) for part in markup.split(TOKEN_PLACEHOLDER)]


#: How many fragments `KeptFragments` keeps per app before starting afresh (a few per page, per mount point).
REMEMBERED_FRAGMENTS = 1024


class KeptFragments:
    """Markup that reads the same on every page of its kind, rendered once per app (`app.extensions["kept_fragments"]`).

    Each fragment is kept under a key naming everything it depends on, and under where the request's URLs are
    rooted (script root and subdomain: its links); outside a request it is rendered every time. The templates'
    `url_for` and `csrf_token` cost a call each (and the token a lookup on `g`) wherever a page names them: a
    fragment kept whole costs one. A form in it carries the request's CSRF token: the fragment is rendered with
    TOKEN_PLACEHOLDER in its place, and each request's token is put there (a fragment without a form asks for no
    token, and leaves the session untouched)."""

    def __init__(self, app: Flask, csrf_token: Callable[[], str]) -> None:
        self.app = app
        self.csrf_token = csrf_token
        self.kept: dict[tuple, list[Markup]] = {}

    def markup(self, key: Hashable, render: Callable[[Callable[[], str]], str]) -> Markup:
        """The markup `render(csrf_token)` gives for `key`: rendered for the first request under each URL root,
        then kept, the request's CSRF token put in at its places."""
        try:
            adapter = _REQUEST_CONTEXT._get_current_object().url_adapter
        except RuntimeError:  # outside a request: nothing to key its URLs by
            adapter = None
        if adapter is None or self.app.url_default_functions:  # URLs that may depend on more than their root
            return Markup(render(self.csrf_token))
        where = (key, adapter.script_name, adapter.subdomain)
        parts = self.kept.get(where)
        if parts is None:
            parts = split_at_token(render(lambda: TOKEN_PLACEHOLDER))
            if len(self.kept) >= REMEMBERED_FRAGMENTS:
                self.kept.clear()
            self.kept[where] = parts
        return escape(self.csrf_token()).join(parts) if len(parts) > 1 else parts[0]

    def template(self, name: str) -> Markup:
        """The template `name` rendered with nothing but the app's globals (and `csrf_token`): the templates'
        `layout_fragment`, for a part of the layout that reads the same on every page."""
        return self.markup(name, lambda csrf_token: self.app.jinja_env.get_template(name).render(csrf_token=csrf_token))


#: How many whole pages `KeptPages` keeps per app (the oldest kept goes first).
REMEMBERED_PAGES = 512
#: Where Flask keeps the messages `flash` left for the next page, in the session.
FLASHES_KEY = "_flashes"


class KeptPages:
    """Whole pages of a logged-in person (`app.extensions["kept_pages"]`), each kept under every value it is
    rendered from, so that viewing it again with nothing changed renders nothing.

    A page's key is made of what its view hands over (`inputs`: the values of the log-in check's rows,
    `viewer.read_values`, and what the page read besides, such as Stripe's summary from the cache) and of what the
    request names: its endpoint, path and query string, where its URLs are rooted, the session's CSRF token (its
    forms' token, so a page is kept per browser session) and the day (UTC). Anything else a page shows must be in
    `inputs`: a value left out would be shown from the first rendering. The user's id is in their rows: a page is
    never served to another user. No page is kept while the session holds flash messages (showing them uses them
    up), nor without a request or where `url_defaults` functions may change its URLs."""

    def __init__(self, app: Flask, csrf_token: Callable[[], str]) -> None:
        self.app = app
        self.csrf_token = csrf_token
        self.kept: dict[tuple, bytes] = {}

    def page(self, inputs: Hashable | None, render: Callable[[], str]) -> str | bytes:
        """`render()`, or the page it gave before for the same `inputs` and request (None: rendered anew). A kept
        page is kept as the UTF-8 the response sends (encoding a whole page again for every view costs more than
        everything else the view does), and is returned so, from the first rendering on."""
        this = _REQUEST_CONTEXT._get_current_object()
        adapter = this.url_adapter
        if inputs is None or adapter is None or self.app.url_default_functions or FLASHES_KEY in this.session:
            return render()
        asked = this.request
        key = (
            inputs,
            asked.endpoint,
            asked.path,
            asked.query_string,
            adapter.script_name,
            adapter.subdomain,
            self.csrf_token(),
            datetime.now(dt.UTC).date(),
        )
        page = self.kept.get(key)
        if page is None:
            page = render().encode()
            if len(self.kept) >= REMEMBERED_PAGES:
                del self.kept[next(iter(self.kept))]  # the oldest kept
            self.kept[key] = page
        return page


#: Flask's proxy of the request context, typed as the proxy it is (its object is one lookup away, without the
#: proxy's own attribute forwarding).
_REQUEST_CONTEXT: Any = request_ctx
#: How many URLs `remembered_url_for` keeps per app before starting afresh (the templates build a few dozen).
REMEMBERED_URLS = 1024
#: How many sessions' signed CSRF tokens `request_csrf_token` keeps per app before starting afresh.
REMEMBERED_TOKENS = 4096


def remembered_url_for(app: Flask) -> Callable[..., str]:
    """The templates' `url_for`: Flask's, whose answer for an endpoint and its arguments is remembered per app.

    Within a request, a URL that is a path depends only on the rule, the arguments and the request's script
    root (and subdomain), so those make the key; every page's navigation builds the same dozen URLs, each
    costing Flask a rule lookup and build. Anything else (no request, `url_defaults` functions, a
    blueprint-relative endpoint, `_external` and the other options, an argument that cannot be a key, an answer
    that is not a path) goes to Flask's.
    """
    built: dict[tuple, str] = {}

    def url_for(endpoint: str, **values: Any) -> str:
        try:
            adapter = _REQUEST_CONTEXT._get_current_object().url_adapter
        except RuntimeError:  # outside a request: Flask's external URLs
            adapter = None
        if adapter is None or app.url_default_functions:
            return app.url_for(endpoint, **values)
        # The key is made by built-in calls only (a remembered URL costs no Python call but the context lookup);
        # the types keep `1` and `True` apart.
        if values:
            key: tuple = (adapter.script_name, adapter.subdomain, endpoint, tuple(values.items()))
            key += tuple(map(type, values.values()))
        else:
            key = (adapter.script_name, adapter.subdomain, endpoint)
        try:
            return built[key]  # only a URL that passed the checks below is there
        except KeyError:
            pass
        except TypeError:  # an argument that cannot be a key (a list of values)
            return app.url_for(endpoint, **values)
        url = app.url_for(endpoint, **values)
        if (
            endpoint[:1] != "."
            and not any(name[:1] == "_" for name in values)
            and url.startswith("/")
            and not url.startswith("//")
        ):
            if len(built) >= REMEMBERED_URLS:
                built.clear()
            built[key] = url
        return url

    return url_for


def request_csrf_token(app: Flask) -> Callable[[], str]:
    """The templates' `csrf_token`: Flask-WTF's token, which it signs once per request and keeps on `g` under
    the form field's name; a page's other forms read it back from there without Flask-WTF's configuration
    lookups (a page with a form in its navigation and three of its own asks four times).

    With WTF_CSRF_TIME_LIMIT None (the app's setting) a signed token never expires: Flask-WTF accepts it as long
    as the session holds the raw token it signs. So the token Flask-WTF signed for a session's raw token (and the
    secret) is remembered per process, and that session's next pages carry it again instead of a new signature
    of the same raw token. With a time limit every request gets a fresh one, as Flask-WTF does."""
    field_name = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    signed: dict[tuple[Any, str], str] = {}

    def csrf_token() -> str:
        token = g.get(field_name)
        if token is not None:
            return token
        config = app.config
        raw = session.get(field_name)
        if not isinstance(raw, str) or config.get("WTF_CSRF_TIME_LIMIT", 3600) is not None:  # Flask-WTF's default
            return generate_csrf()
        key = (config.get("WTF_CSRF_SECRET_KEY") or app.secret_key, raw)
        token = signed.get(key)
        if token is None:
            token = generate_csrf()
            if session.get(field_name) == raw:  # signed for that raw token, not for a new one
                if len(signed) >= REMEMBERED_TOKENS:
                    signed.clear()
                signed[key] = token
            return token
        setattr(g, field_name, token)  # as generate_csrf keeps it: the request's forms read it back
        return token

    return csrf_token


def register(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(date, "date")
    app.add_template_filter(percent, "percent")
    app.add_template_filter(datetime_utc, "datetime")
    app.add_template_global(payment_problem, "payment_problem")
    url_for = remembered_url_for(app)
    app.add_template_global(url_for, "url_for")
    # Flask-WTF hands its `csrf_token` to every template through a context processor: this one, registered
    # after it, hands over the one that reads the request's token back.
    csrf_token = request_csrf_token(app)
    app.context_processor(lambda: {"csrf_token": csrf_token})
    app.add_template_global(site_navigation(app, url_for, csrf_token), "site_nav")
    fragments = app.extensions["kept_fragments"] = KeptFragments(app, csrf_token)
    app.extensions["kept_pages"] = KeptPages(app, csrf_token)
    app.add_template_global(fragments.template, "layout_fragment")
