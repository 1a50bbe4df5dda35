"""The site navigation on a phone (390×844): nothing wider than the screen, the links behind a toggler.

Bootstrap's collapse comes from the vendored bundle in app/static (no CDN, no inline script under the CSP); these
tests run it in Chromium, logged in as an admin, whose seven entries are the longest navigation there is.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.factories import UserFactory

PHONE = {"width": 390, "height": 844}
#: The menu's classes once Bootstrap's opening transition is over (`collapsing` while it runs): a string given to
#: `to_have_class` must equal the whole attribute, so the class is matched as a word.
MENU_SHOWN = re.compile(r"(^|\s)show(\s|$)")
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def admin_page(site) -> Page:
    """The browser page, logged in as an admin through the real form, console messages kept on `page.messages`."""
    with site.app.app_context():
        UserFactory(email="admin@example.com", is_admin=True)
    page = site.page
    page.messages = []
    page.on("console", lambda message: page.messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: page.messages.append(f"pageerror: {error}"))
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(site.url + "/account")
    page.base = site.url
    return page


def scroll_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def inside_viewport(page: Page, box: dict | None) -> bool:
    size = page.viewport_size
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= size["width"]
        and box["y"] + box["height"] <= size["height"]
    )


def test_on_a_phone_no_page_is_wider_than_the_screen_and_log_out_is_in_the_menu(admin_page):
    page = admin_page
    log_out = page.get_by_role("button", name="Log out")
    toggler = page.get_by_role("button", name="Menu")
    for path in ("/account", "/billing", "/admin", "/pricing", "/strategies/", "/alerts/"):
        page.goto(page.base + path)
        page.wait_for_load_state("load")
        assert scroll_width(page) <= PHONE["width"], path
        expect(log_out).to_be_hidden()  # folded away until the menu is opened
        toggler.click()
        expect(toggler).to_have_attribute("aria-expanded", "true")
        expect(log_out).to_be_visible()
        expect(page.locator("#site-menu")).to_have_class(MENU_SHOWN)  # the opening transition is over
        assert inside_viewport(page, log_out.bounding_box()), path
        assert scroll_width(page) <= PHONE["width"], path
    assert not [m for m in page.messages if "Refused to" in m or "pageerror" in m], page.messages

    with page.expect_response(lambda r: r.request.method == "POST" and r.url == page.base + "/logout") as answer:
        log_out.click()  # the button in the opened menu works
    assert answer.value.status == 302
    expect(page.get_by_role("alert")).to_have_text("You have been logged out.")
    expect(log_out).to_have_count(0)


def test_on_a_phone_the_admin_lookup_fits(admin_page):
    page = admin_page
    page.goto(page.base + "/admin")
    look_up = page.get_by_role("button", name="Look up")
    assert inside_viewport(page, look_up.bounding_box())
    page.fill("input[name=email]", "admin@example.com")
    look_up.click()
    expect(page.get_by_test_id("user-email")).to_have_text("admin@example.com")
    # The text is in the DOM before the page's own stylesheet (admin.css: the tables stacked on a phone) has
    # loaded; measured before it, the unstacked table is wider than the phone.
    page.wait_for_load_state("load")
    assert scroll_width(page) <= PHONE["width"]


def test_on_a_desktop_the_links_sit_in_one_row_without_a_toggler(admin_page):
    page = admin_page
    page.set_viewport_size(DESKTOP)
    page.goto(page.base + "/admin")
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    log_out = page.get_by_role("button", name="Log out")
    expect(log_out).to_be_visible()
    assert inside_viewport(page, log_out.bounding_box())
    tops = {
        round(page.locator("nav").get_by_role("link", name=name, exact=True).bounding_box()["y"])
        for name in ("Pricing", "Strategies", "Alerts", "Account", "Billing", "Admin")
    }
    assert len(tops) == 1  # one row
    assert scroll_width(page) <= DESKTOP["width"]
