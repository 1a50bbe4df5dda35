"""Fragments that read the same on every page of their kind, rendered once per app (`templating.KeptFragments`):
the layout's style sheets and icons, the account page's security card (while its forms are blank), its usage
lines (per figures) and its plan card. Each is counted where it is rendered, seen under each mount point with its
own links, and each viewer's forms carry that viewer's own CSRF token.

Each test views its pages under a mount point of its own first (SCRIPT_NAME): the app may have served them before.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter

import jinja2
import jinja2.runtime
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Strategy, User
from tests.perf.test_logged_in_pages import calls_of


def fresh_mount() -> str:
    return f"/mounted-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rendered(monkeypatch):
    """Counts of the templates rendered (by name) and of the macros called (by macro name) while the test runs."""
    counts: Counter[str] = Counter()
    template_render, macro_invoke = jinja2.Template.render, jinja2.runtime.Macro._invoke

    def render(self, *args, **kwargs):
        counts[self.name] += 1
        return template_render(self, *args, **kwargs)

    def invoke(self, *args):
        counts[f"macro:{self.name}"] += 1
        return macro_invoke(self, *args)

    monkeypatch.setattr(jinja2.Template, "render", render)
    monkeypatch.setattr(jinja2.runtime.Macro, "_invoke", invoke)
    return counts


@pytest.fixture
def member(seeded, client, auth):
    """A logged-in Free member's client."""
    assert auth.signup().status_code == 302
    return client


def view(client, path: str, mount: str) -> str:
    response = client.get(path, environ_overrides={"SCRIPT_NAME": mount})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_layouts_style_sheets_and_icons_are_rendered_once_per_mount_point(member, rendered):
    mount = fresh_mount()
    first = view(member, "/account", mount)
    assert rendered["_head_links.html"] == 1
    again, billing = view(member, "/account", mount), view(member, "/billing", mount)
    assert rendered["_head_links.html"] == 1  # another view, another page: kept
    elsewhere = view(member, "/billing", mount + "-2")
    assert rendered["_head_links.html"] == 2
    head = re.compile(r"<head>.*?</head>", re.S)
    assert head.search(first).group(0) == head.search(again).group(0)
    assert f'<link rel="stylesheet" href="{mount}/static/css/app.css">' in billing
    assert f'<link rel="icon" href="{mount}-2/static/img/logo.svg" type="image/svg+xml">' in elsewhere


def test_the_account_pages_blank_security_card_usage_lines_and_plan_card_are_rendered_once(member, rendered):
    mount = fresh_mount()
    view(member, "/account", mount)
    assert rendered["account/_security.html"] == 1 and rendered["account/_plan_features.html"] == 1
    assert rendered["macro:usage_line"] == 2  # the strategies line and the backtests line
    view(member, "/account", mount)
    assert rendered["account/_security.html"] == 1 and rendered["account/_plan_features.html"] == 1
    assert rendered["macro:usage_line"] == 2


def test_the_plan_card_links_to_the_pricing_page_of_its_mount_point(member):
    """The plan card's "Compare plans" is the mount point's own pricing page, not that of the first page that
    rendered the card. (Before: the card was kept per plan only.)"""
    mount = fresh_mount()
    for where in (mount, mount + "-2"):
        page = view(member, "/account", where)
        assert f'href="{where}/pricing">Compare plans</a>' in page


SECURITY_TOKENS = re.compile(
    r'action="[^"]*/account/(?:email|password|logout-everywhere)"[^>]*>\s*(?:<h3[^>]*>[^<]*</h3>\s*)?'
    r'<input [^>]*name="csrf_token"[^>]*value="([^"]+)"'
)


def test_each_members_security_card_carries_their_own_token_and_works(seeded, client, auth):
    """The kept card's three forms carry the viewing session's CSRF token, put in on each view: one member's
    token is refused on another's session, and their own ends their sessions everywhere."""
    other = seeded.test_client()
    assert auth.signup().status_code == 302
    assert type(auth)(other).signup("other@example.com").status_code == 302
    tokens = []
    for browser in (client, other):
        found = SECURITY_TOKENS.findall(browser.get("/account").get_data(as_text=True))
        assert len(found) == 3 and len(set(found)) == 1
        tokens.append(found[0])
    assert tokens[0] != tokens[1]
    refused = client.post("/account/logout-everywhere", data={"csrf_token": tokens[1]})
    assert refused.status_code == 400
    assert client.get("/account").status_code == 200
    assert client.post("/account/logout-everywhere", data={"csrf_token": tokens[0]}).status_code == 302
    assert client.get("/account").status_code == 302  # logged out everywhere
    assert other.get("/account").status_code == 200


def test_a_form_sent_back_with_errors_is_shown_with_them_on_that_view_only(member):
    """A change of password refused shows the card with its errors (not the kept blank card), and the next view
    shows the blank card again (the errors were not kept)."""
    page = member.get("/account").get_data(as_text=True)
    token = SECURITY_TOKENS.findall(page)[0]
    refused = member.post(
        "/account/password",
        data={"csrf_token": token, "current": "wrong password", "password": "a new long one", "confirm": "nope"},
    )
    assert refused.status_code == 400
    sent_back = refused.get_data(as_text=True)
    # The session's token, signed anew on each view (its time stamp changes when a second has passed since)
    assert (
        "is-invalid" in sent_back
        and [signed_token(found) for found in SECURITY_TOKENS.findall(sent_back)] == [signed_token(token)] * 3
    )
    again = member.get("/account").get_data(as_text=True)
    assert (
        "is-invalid" not in again
        and [signed_token(found) for found in SECURITY_TOKENS.findall(again)] == [signed_token(token)] * 3
    )


def signed_token(csrf_token: str) -> str:
    """The session's CSRF token a form's signed token carries (its part before the signature's time stamp)."""
    return csrf_token.split(".")[0]


def test_each_member_sees_their_own_usage(seeded, client, auth):
    """Usage lines are kept per figures: two members with different counts each see theirs."""
    other = seeded.test_client()
    assert auth.signup().status_code == 302
    assert type(auth)(other).signup("other@example.com").status_code == 302
    with seeded.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == "trader@example.com"))
        db.session.add(Strategy(user_id=user_id, name="Mine", rules="fast=20 slow=50"))
        db.session.commit()
    usage = re.compile(r'data-testid="usage-text-strategies_max">([^<]+)<')
    mine, theirs = (usage.search(b.get("/account").get_data(as_text=True)).group(1) for b in (client, other))
    assert mine.startswith("1 of ") and theirs.startswith("0 of ")


#: Calls of a template function (`url_for`, `csrf_token`, a filter-less global) on one view of a page the app
#: served before: each costs Jinja's `Context.call`. The layout's navigation and payment banner, the flashed
#: messages, the kept fragments, the page's own few links. (Before: 19 on /account, 9 on /billing.)
TEMPLATE_CALLS = {"/account": 8, "/billing": 6}


@pytest.mark.parametrize("path", list(TEMPLATE_CALLS))
def test_a_logged_in_view_makes_few_template_calls(member, path):
    assert member.get(path).status_code == 200
    calls = calls_of(jinja2.runtime.Context.call, lambda: member.get(path))
    print(path, calls)
    assert calls <= TEMPLATE_CALLS[path]
