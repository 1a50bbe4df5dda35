"""The shared layout (app/templates/base.html): its navigation as each kind of user sees it on each page, and what
rendering it asks of Jinja and of the `current_user` proxy (counted, not timed)."""

from __future__ import annotations

import re
import uuid

import flask_login.utils
import jinja2
import jinja2.runtime
import pytest
from flask import render_template_string
from flask_login import login_user

from app.extensions import db
from app.models import User
from app.services.accounts import create_user

NAV_RE = re.compile(r'<div class="navbar-nav[^"]*">(.*?)</div>', re.S)


def nav_of(html: str) -> str:
    """The navigation's links and forms, whitespace between tags dropped, the CSRF token masked."""
    nav = NAV_RE.search(html).group(1)
    nav = re.sub(r'(name="csrf_token" value=")[^"]+', r"\1TOKEN", nav)
    return re.sub(r">\s+<", "><", nav).strip()


PRICING = '<a class="nav-link{}" href="/pricing"{}>Pricing</a>'
MEMBER_LINKS = [
    ("strategies", "/strategies/", "Strategies"),
    ("alerts", "/alerts/", "Alerts"),
    ("account", "/account", "Account"),
    ("billing", "/billing", "Billing"),
]
LOGOUT = (
    '<form method="post" action="/logout" class="mt-2 mt-lg-0"><input type="hidden" name="csrf_token" value="TOKEN">'
    '<button type="submit" class="btn btn-sm btn-outline-secondary">Log out</button></form>'
)


def expected_nav(current: str | None, admin: bool = False) -> str:
    """The navigation as the macro-per-link layout wrote it: the current section's link `active` and
    `aria-current="page"`."""
    links = [("pricing", "/pricing", "Pricing"), *MEMBER_LINKS] + ([("admin", "/admin", "Admin")] if admin else [])
    marked = (" active", ' aria-current="page"')
    return "".join(
        '<a class="nav-link{}" href="{}"{}>{}</a>'.format(
            *(marked[0], url, marked[1]) if blueprint == current else ("", url, ""), label
        )
        for blueprint, url, label in links
    )


@pytest.fixture
def member(seeded, client, auth):
    """A logged-in user's client; `admin` makes them an admin."""

    def log_in(admin: bool = False):
        assert auth.signup().status_code == 302  # and logged in
        if admin:
            with seeded.app_context():
                db.session.execute(db.update(User).values(is_admin=True))
                db.session.commit()
        return client

    return log_in


def test_a_visitor_sees_pricing_log_in_and_start_free(seeded, client):
    assert nav_of(client.get("/pricing").get_data(as_text=True)) == (
        PRICING.format(" active", ' aria-current="page"')
        + '<a class="nav-link" href="/login">Log in</a>'
        + '<a class="btn btn-sm btn-accent mt-2 mt-lg-0" href="/signup">Start free</a>'
    )
    # The log-in page is in the account section, which a visitor's bar has no link to.
    assert nav_of(client.get("/login").get_data(as_text=True)).startswith(PRICING.format("", "") + "<a")


@pytest.mark.parametrize(
    ("path", "current"),
    [("/account", "account"), ("/billing", "billing"), ("/strategies/", "strategies"), ("/alerts/", "alerts")],
)
def test_a_members_current_section_is_marked(member, path, current):
    html = member().get(path).get_data(as_text=True)
    assert nav_of(html) == expected_nav(current) + LOGOUT


def test_an_admin_has_the_admin_link_marked_on_the_dashboard(member):
    client = member(admin=True)
    assert nav_of(client.get("/admin").get_data(as_text=True)) == expected_nav("admin", admin=True) + LOGOUT
    assert nav_of(client.get("/pricing").get_data(as_text=True)) == expected_nav("pricing", admin=True) + LOGOUT


def test_the_layout_calls_no_macro_and_reads_the_user_once(seeded, monkeypatch):
    """Each Jinja macro call and each read through the `current_user` proxy costs a page's every view: the layout
    takes the user Flask-Login's context processor read (its one read) and writes its links in a loop (a macro
    per link and the payment banner's own reads cost an admin's page six macro calls and three reads)."""
    with seeded.app_context():
        admin = create_user("admin@example.com", "correct horse", is_admin=True)
        db.session.commit()
        admin_id = admin.id
    macros, reads = [], []
    invoke, get_user = jinja2.runtime.Macro._invoke, flask_login.utils._get_user
    monkeypatch.setattr(jinja2.runtime.Macro, "_invoke", lambda self, *a: macros.append(self.name) or invoke(self, *a))
    monkeypatch.setattr(flask_login.utils, "_get_user", lambda: reads.append(1) or get_user())
    with seeded.test_request_context("/account"):
        seeded.preprocess_request()
        login_user(db.session.get(User, admin_id))
        reads.clear()
        html = render_template_string('{% extends "base.html" %}')
    assert 'href="/admin"' in html and 'class="nav-link active" href="/account" aria-current="page"' in html
    assert macros == []
    assert len(reads) == 1


LOGOUT_TOKEN_RE = re.compile(r'action="/logout"[^>]*>\s*<input type="hidden" name="csrf_token" value="([^"]+)"')


def test_each_members_navigation_carries_their_own_token_and_logs_them_out(seeded, client, auth):
    """The navigation's markup is kept per kind of page (`site_nav`); the log-out form's CSRF token is the
    viewing session's, put in on each view: each member's logs that member out, and no one else."""
    Auth = type(auth)
    other = seeded.test_client()
    assert auth.signup().status_code == 302
    assert Auth(other).signup("other@example.com").status_code == 302
    tokens = [
        LOGOUT_TOKEN_RE.search(browser.get("/account").get_data(as_text=True)).group(1) for browser in (client, other)
    ]
    assert tokens[0] != tokens[1]
    assert client.post("/logout", data={"csrf_token": tokens[1]}).status_code == 400  # the other's token: refused
    assert client.get("/account").status_code == 200
    assert client.post("/logout", data={"csrf_token": tokens[0]}).status_code == 302
    assert client.get("/account").status_code == 302  # logged out
    assert other.get("/account").status_code == 200


def test_the_navigation_is_rendered_once_per_kind_of_page(member):
    """A page's navigation is rendered once per app for each kind (who views, which section, where the app is
    mounted): the same page again is not rendered, another section or another mount point is. (The app may have
    served these pages before this test: each view is under a mount point of its own, first.)"""
    client = member()
    mount = f"/mounted-{uuid.uuid4().hex[:8]}"
    rendered = []
    template_render = jinja2.Template.render

    def render(self, *args, **kwargs):
        if self.name == "_site_nav.html":
            rendered.append(self.name)
        return template_render(self, *args, **kwargs)

    def view(path: str, script_name: str = mount) -> str:
        response = client.get(path, environ_overrides={"SCRIPT_NAME": script_name})
        assert response.status_code == 200
        return response.get_data(as_text=True)

    jinja2.Template.render = render  # type: ignore[method-assign]
    try:
        first = view("/account")
        assert len(rendered) == 1
        again = view("/account")
        assert len(rendered) == 1 and nav_of(again) == nav_of(first)
        billing = view("/billing")
        assert len(rendered) == 2
        elsewhere = view("/billing", mount + "-2")
        assert len(rendered) == 3
    finally:
        jinja2.Template.render = template_render  # type: ignore[method-assign]
    assert f'href="{mount}/billing" aria-current="page"' in billing and f'action="{mount}/logout"' in billing
    assert f'href="{mount}-2/billing"' in elsewhere and f'action="{mount}-2/logout"' in elsewhere
