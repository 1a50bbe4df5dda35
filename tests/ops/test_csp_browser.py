"""The pages satisfy the Content-Security-Policy: Chromium reports no violation on any of them.

A live server (werkzeug in a thread, on a free port) serves the test app with its real headers; Chromium logs
every CSP violation to the console ("Refused to apply inline style…"), which the test collects.
"""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def site(seeded, live_server):
    """The seeded test app served over HTTP (tests/conftest.py's live server)."""
    return live_server.url


@pytest.fixture
def console(page):
    """Every console message and page error of the browser page, as text."""
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    return messages


def violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def test_public_pages_have_no_csp_violation(page, console, site):
    for path in ("/pricing", "/login", "/signup", "/signup?plan=pro&cycle=yearly", "/no-such-page"):
        response = page.goto(site + path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
    assert page.locator("link[rel=stylesheet]").count() >= 2  # the styles that CSP would block if inline
    assert not violations(console), violations(console)


def sign_up(page, site, email="csp@example.com"):
    """Sign up, then log in where sign-up leaves the visitor (it logs nobody in)."""
    page.goto(site + "/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "correct horse battery")
    page.fill("input[name=confirm]", "correct horse battery")
    page.locator("form button[type=submit]").last.click()
    page.wait_for_url(re.compile(re.escape(site) + "/login"))
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "correct horse battery")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(re.escape(site) + "/account"))


def test_signed_in_pages_have_no_csp_violation(page, console, site):
    sign_up(page, site)
    for path in (
        "/pricing",
        "/account",
        "/billing",
        "/billing/checkout?plan=pro&cycle=yearly",
        "/strategies",
        "/alerts",
    ):
        page.goto(site + path)
        page.wait_for_load_state("load")
    assert "/login" not in page.url  # signed in, not sent to the log-in page
    assert not violations(console), violations(console)


def test_paying_user_pages_have_no_csp_violation(page, console, site, stripe_emulator):
    """The pages only a paying user sees: the cancel confirmation (a Free user is sent back to /billing)."""
    sign_up(page, site, "csp-pro@example.com")
    page.goto(site + "/pricing")
    page.locator("[data-plan=pro] form.choose-monthly button").click()
    page.fill("#card_number", "4242 4242 4242 4242")  # the emulator's Checkout page: not ours, not checked
    page.fill("#card_name", "Ada Lovelace")
    page.click("#submit")
    page.wait_for_url(re.compile(re.escape(site) + r"/billing/success"))
    console.clear()
    page.goto(site + "/billing/cancel")
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text() == "Cancel your Pro plan?"
    assert not violations(console), violations(console)


def test_the_check_would_catch_a_violation(page, console, site):
    """The instrument works: an inline style on a page under the policy is reported."""
    page.goto(site + "/pricing")
    page.evaluate(
        "() => { const d = document.createElement('div'); d.innerHTML = '<p style=\"color:red\">x</p>';"
        " document.body.appendChild(d); }"
    )
    page.wait_for_timeout(200)
    assert violations(console)
