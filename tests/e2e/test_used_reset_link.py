"""A password-reset link, once used, answers "invalid, used or expired" when it is opened again in the browser,
the Back button's way included: its page is never kept by the browser, so a used link never shows its form."""

from __future__ import annotations

from playwright.sync_api import expect

from app.extensions import db
from app.services.accounts import find_user_by_email, password_reset_token
from tests.factories import UserFactory

USED = "This reset link is invalid, used or expired: ask for a new one."


def test_a_used_reset_link_says_so_before_its_form_is_filled_in(site):
    page = site.page
    with site.app.app_context():
        user = UserFactory(email="forgetful@example.com")
        link = site.url + "/reset-password/" + password_reset_token(find_user_by_email(user.email))
        db.session.remove()
    page.goto(link)
    page.get_by_label("New password", exact=True).fill("a brand new secret")
    page.get_by_label("Confirm new password").fill("a brand new secret")
    page.locator("main form button[type=submit]").click()
    expect(page.locator(".alert-success")).to_contain_text("Your password has been reset")

    page.go_back()  # the form's page again, as the browser's history has it
    expect(page.get_by_role("alert").filter(has_text=USED)).to_be_visible()
    expect(page.get_by_label("New password", exact=True)).to_have_count(0)

    page.goto(link)  # the link opened again from the mail
    expect(page.get_by_role("alert").filter(has_text=USED)).to_be_visible()
    expect(page.get_by_label("New password", exact=True)).to_have_count(0)
