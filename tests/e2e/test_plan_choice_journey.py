"""A new customer's most common path, in Chromium: the pricing page without an account → Choose Pro → sign up
(or log in) → review the plan → Stripe Checkout on the emulator → the success page. App and emulator over HTTP."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import PASSWORD
from tests.factories import UserFactory


def test_anonymous_visitor_chooses_pro_signs_up_reviews_and_pays(site):
    page = site.page
    page.goto(site.url + "/pricing")
    assert page.context.cookies() == []  # an anonymous visit gets no session cookie
    page.locator("label[for=cycle-yearly]").click()
    expect(page.locator("[data-plan=pro] a.choose-monthly")).to_be_hidden()
    page.locator("[data-plan=pro] a.choose-yearly").click()

    expect(page).to_have_url(site.url + "/signup?plan=pro&cycle=yearly")
    expect(page.get_by_test_id("chosen-plan")).to_have_text(
        "You chose Pro, billed yearly — $479.99/year. Create your account, then log in to confirm and pay."
    )
    page.fill("input[name=email]", "new@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.get_by_role("button", name="Create account").click()

    # Sign-up logs nobody in (it answers alike for an address that has an account): log in, on to the review.
    expect(page.get_by_role("alert")).to_contain_text(
        "Check your email: we sent a message to new@example.com. Open the link in it, then log in to continue to Pro."
    )
    expect(page.get_by_test_id("login-heading")).to_have_text("Now log in")  # not "Welcome back"
    expect(page.locator("input[name=email]")).to_have_value("new@example.com")
    expect(page.locator("input[name=password]")).to_be_focused()
    site.login("new@example.com")
    expect(page).to_have_url(site.url + "/billing/checkout?plan=pro&cycle=yearly")
    expect(page.get_by_test_id("review-plan")).to_have_text("Pro")
    expect(page.get_by_test_id("review-price")).to_have_text("$479.99 / year")
    expect(page.get_by_test_id("review-saving")).to_contain_text("$119.89 (20%)")
    expect(page.get_by_test_id("review-features")).to_contain_text("Real-time alerts")
    page.get_by_role("button", name="Continue to secure checkout").click()

    site.pay("4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/billing/success\?session_id=cs_"))
    expect(page.get_by_test_id("success-plan")).to_have_text("Pro")
    expect(page.get_by_test_id("success-amount")).to_have_text("$479.99")
    [row] = site.subscriptions("new@example.com")
    assert (row["plan"], row["billing_cycle"], row["status"]) == ("pro", "yearly", "active")


def test_a_returning_customer_logs_in_from_the_signup_page_and_keeps_the_choice(site):
    page = site.page
    with site.app.app_context():
        UserFactory(email="back@example.com")  # password "correct horse"
    page.goto(site.url + "/pricing")
    page.locator("[data-plan=starter] a.choose-monthly").click()
    expect(page.get_by_test_id("chosen-plan")).to_contain_text("You chose Starter, billed monthly")
    page.get_by_role("link", name="Log in").last.click()  # the page's own link, not the navigation's

    page.fill("input[name=email]", "back@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(site.url + "/billing/checkout?plan=starter&cycle=monthly")
    expect(page.get_by_test_id("review-price")).to_have_text("$19.99 / month")
