"""The pages satisfy the Content-Security-Policy: Chromium reports no violation on any of them.

A live server (werkzeug in a thread, on a free port) serves the test app with its real headers; Chromium logs
every CSP violation to the console ("Refused to apply inline style…"), which the test collects.
"""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server


@pytest.fixture
def live_server(seeded):
    server = make_server("127.0.0.1", 0, seeded, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def console(page):
    """Every console message and page error of the browser page, as text."""
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    return messages


def violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def test_public_pages_have_no_csp_violation(page, console, live_server):
    for path in ("/pricing", "/login", "/signup", "/no-such-page"):
        response = page.goto(live_server + path)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
    assert page.locator("link[rel=stylesheet]").count() >= 2  # the styles that CSP would block if inline
    assert not violations(console), violations(console)


def test_signed_in_pages_have_no_csp_violation(page, console, live_server):
    page.goto(live_server + "/signup")
    page.fill("input[name=email]", "csp@example.com")
    page.fill("input[name=password]", "correct horse battery")
    page.fill("input[name=confirm]", "correct horse battery")
    page.locator("form button[type=submit]").last.click()
    page.wait_for_load_state("load")
    for path in ("/pricing", "/account"):
        page.goto(live_server + path)
        page.wait_for_load_state("load")
    assert page.url == live_server + "/account"  # signed in, not sent to the log-in page
    assert "csp@example.com" in page.content()
    assert not violations(console), violations(console)


def test_the_check_would_catch_a_violation(page, console, live_server):
    """The instrument works: an inline style on a page under the policy is reported."""
    page.goto(live_server + "/pricing")
    page.evaluate("() => { const d = document.createElement('div'); d.innerHTML = '<p style=\"color:red\">x</p>';"
                  " document.body.appendChild(d); }")
    page.wait_for_timeout(200)
    assert violations(console)
