"""The account page in Chromium at 1280 and 390 px: Stripe's billing email shown apart from the login email, and
the login email changed through the form and the link mailed to the new address.

`ACCOUNT_SCREENSHOTS=/some/dir pytest tests/e2e/test_account_email.py` keeps the screenshots there (account.png,
account-phone.png, before and after the change); otherwise none is taken (a full-page screenshot costs Chromium a few
hundred ms of CPU, and nothing reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.factories import UserFactory
from tests.security.test_email_change import change_link

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", list(SIZES))
def test_the_account_page_shows_the_billing_email_and_changes_the_login_email(site, smtp_sink, size):
    page = site.page
    customer = site.emulator.client().v1.customers.create(params={"email": "accounts-payable@example.com"})
    with site.app.app_context():
        UserFactory(
            email="ada@example.com",
            stripe_customer_id=customer.id,
            billing_email="accounts-payable@example.com",
            name="Ada Lovelace Ltd",
        )
    shots = Path(os.environ["ACCOUNT_SCREENSHOTS"]) if os.environ.get("ACCOUNT_SCREENSHOTS") else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    suffix = "" if size == "desktop" else "-phone"
    page.set_viewport_size(SIZES[size])
    page.goto(site.url + "/login")
    page.fill("input[name=email]", "ada@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(site.url + "/account")

    expect(page.get_by_test_id("account-email")).to_have_text("ada@example.com")
    expect(page.get_by_test_id("billing-email")).to_contain_text("accounts-payable@example.com")
    expect(page.get_by_test_id("billing-email")).to_contain_text("managed in the billing portal")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    if shots:
        page.screenshot(path=str(shots / f"account{suffix}.png"), full_page=True)

    form = page.get_by_test_id("change-email")
    form.get_by_label("New email").fill("ada.lovelace@example.com")
    form.get_by_label("Current password").fill("correct horse")
    form.get_by_role("button", name="Change login email").click()
    expect(page.locator(".alert-info")).to_contain_text("We sent a link to ada.lovelace@example.com")
    expect(page.get_by_test_id("account-email")).to_have_text("ada@example.com")

    page.goto(site.url + change_link(smtp_sink, "ada.lovelace@example.com", site.app))
    expect(page.locator(".alert-success")).to_contain_text("Your login email is now ada.lovelace@example.com")
    expect(page.get_by_test_id("account-email")).to_have_text("ada.lovelace@example.com")
    expect(page.get_by_test_id("billing-email")).to_have_count(0)  # Stripe's customer now has the new address
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    if shots:
        page.screenshot(path=str(shots / f"account-changed{suffix}.png"), full_page=True)
    assert site.emulator.client().v1.customers.retrieve(customer.id).email == "ada.lovelace@example.com"
