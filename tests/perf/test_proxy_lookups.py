"""How many times a logged-in view looks its request, app, session, `g` or user up through Werkzeug's context proxies.

Every read through `request`, `current_app`, `session`, `g` or `current_user` (an attribute, `in`, a truth test)
resolves the proxy: a context-variable lookup and two Python calls in Werkzeug, about a microsecond of CPU on this
machine; Flask-Login's `current_user` also runs `_get_user`, which looks `g` up twice more. The hooks every request
runs read each context once where they need it more than once. Counted for one view of each page (after a first
view, as a running app has them), each a ceiling; printed with `-s`.
"""

from __future__ import annotations

import sys

import pytest
import werkzeug.local
from flask import request_started

from tests.perf.test_logged_in_pages import pro_client  # noqa: F401  (the fixture)

#: Proxy lookups of one view (before: 98 on /account, 87 on /billing).
PROXY_LOOKUPS = {"/account": 87, "/billing": 76}


def proxy_lookups(action) -> int:
    """How many context proxies were resolved while `action()` ran: every lookup through a `LocalProxy` calls its
    `_get_current_object` (an attribute read through the proxy, or the caller's own call)."""
    lookups = 0
    local_py = werkzeug.local.__file__

    def hook(frame, event, arg):
        nonlocal lookups
        code = frame.f_code
        if event == "call" and code.co_name == "_get_current_object" and code.co_filename == local_py:
            lookups += 1

    sys.setprofile(hook)
    try:
        action()
    finally:
        sys.setprofile(None)
    return lookups


def sentry_receivers() -> int:
    """Receivers of Flask's request_started that Sentry's Flask integration connected: once any app of the process
    has set Sentry up (a test of it), its receiver stays connected for every later app, and resolves the request
    once per request (what the app does with SENTRY_DSN set)."""
    return sum(1 for receiver in request_started.receivers_for(None) if receiver.__module__.startswith("sentry_sdk"))


@pytest.mark.parametrize("path", list(PROXY_LOOKUPS))
def test_a_logged_in_view_resolves_a_few_dozen_context_proxies(pro_client, path):  # noqa: F811
    lookups = proxy_lookups(lambda: pro_client.get(path))
    print(path, lookups, "proxy lookups", sentry_receivers(), "of Sentry's receivers")
    assert lookups <= PROXY_LOOKUPS[path] + sentry_receivers()


def test_a_pending_remember_me_operation_is_still_carried_out(app, pro_client):  # noqa: F811
    """A page skips Flask-Login's remember-me step only when the session holds no operation for it: a pending
    "set" still sets the cookie (and is taken out of the session), and with REMEMBER_COOKIE_REFRESH_EACH_REQUEST
    every page sends it."""
    name = app.config.get("REMEMBER_COOKIE_NAME", "remember_token")

    def remember_cookies(response) -> list[str]:
        return [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]

    assert remember_cookies(pro_client.get("/account")) == []
    with pro_client.session_transaction() as session:
        session["_remember"] = "set"
    response = pro_client.get("/account")
    assert response.status_code == 200 and remember_cookies(response)
    with pro_client.session_transaction() as session:
        assert "_remember" not in session
    assert remember_cookies(pro_client.get("/account")) == []
    app.config["REMEMBER_COOKIE_REFRESH_EACH_REQUEST"] = True
    assert remember_cookies(pro_client.get("/account"))
