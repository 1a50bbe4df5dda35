"""Every billing state in Chromium, at 1280 px and on a 390 px phone: the pending downgrade and "Keep Pro", what a
downgrade loses, past due with the amount and the next retry, a subscription to the $0 price shown as Free.
Nothing may be wider than the screen. App and emulator over HTTP; the emulator's clock drives renewals."""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import Page, expect

from app.extensions import db
from app.models import AlertSettings
from app.services.stripe_gateway import from_timestamp
from app.templating import date
from tests.factories import UserFactory

VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
FAILING_CARD = "4000 0000 0000 0341"


@pytest.fixture(params=sorted(VIEWPORTS))
def sized(request, site):
    """The site with the browser page at one of the two widths."""
    site.page.set_viewport_size(VIEWPORTS[request.param])
    return site


def fits_the_screen(page: Page) -> None:
    # Measured once the page has loaded (its style sheets included): the elements an assertion waited for are in
    # the DOM before the styles that lay them out are applied, and an unstyled page is wider than any screen.
    page.wait_for_load_state("load")
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url


def subscribe(site, email: str, plan: str, card: str = "4242 4242 4242 4242") -> None:
    site.signup(email)
    site.choose(plan, "monthly")
    site.pay(card)
    expect(site.page.get_by_test_id("success-plan")).to_be_visible()


def log_in(site, email: str, password: str = "correct horse") -> None:
    """Log in as someone else: the current page is left first, so that no response still on its way (a stylesheet,
    the favicon) brings the previous user's session cookie back after the cookies are cleared."""
    page = site.page
    page.goto("about:blank")
    page.context.clear_cookies()
    page.goto(site.url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.locator("main form button[type=submit]").click()


def test_a_scheduled_downgrade_can_be_kept_back(sized, webhooks_to_app):
    site, page = sized, sized.page
    subscribe(site, "keep@example.com", "pro")
    [row] = site.subscriptions("keep@example.com")
    ends = date(row["current_period_end"])

    site.choose("starter", "monthly")
    expect(page).to_have_url(re.compile(r"/billing/change\?plan=starter&cycle=monthly"))
    losses = page.get_by_test_id("change-losses")
    expect(losses).to_contain_text("API access")
    expect(losses).to_contain_text("Real-time alerts")
    fits_the_screen(page)
    page.get_by_role("button", name="Confirm change").click()

    expect(page.get_by_test_id("billing-period")).to_contain_text(f"changes to Starter (monthly) on {ends}")
    fits_the_screen(page)
    page.goto(site.url + "/pricing")
    expect(page.locator("[data-plan=starter] [data-testid=scheduled-plan]")).to_have_text(f"Starts {ends}")
    expect(page.locator("[data-plan=pro] .plan-pending")).to_contain_text(f"Ends {ends}")
    fits_the_screen(page)
    page.locator("[data-plan=pro]").get_by_role("button", name="Keep Pro").click()

    expect(page.get_by_role("alert").first).to_contain_text(f"You keep Pro: it renews on {ends}.")
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"renews on {ends}")
    expect(page.get_by_test_id("keep-plan")).to_have_count(0)
    [sub] = site.stripe_subscriptions(site.user("keep@example.com").stripe_customer_id)
    assert sub.schedule is None


def test_past_due_says_what_is_owed_on_every_page(sized, webhooks_to_app):
    site, page, emulator = sized, sized.page, sized.emulator
    subscribe(site, "late@example.com", "starter", FAILING_CARD)
    [row] = site.subscriptions("late@example.com")
    emulator.advance(to=int(row["current_period_end"].timestamp()) + 60)
    emulator.flush()
    [sub] = site.stripe_subscriptions(site.user("late@example.com").stripe_customer_id)
    invoice = emulator.client().v1.invoices.retrieve(sub.latest_invoice)
    retry = date(from_timestamp(invoice.next_payment_attempt))

    page.goto(site.url + "/billing")
    banner = page.get_by_test_id("past-due-banner")
    expect(banner).to_contain_text("Your last payment failed: $19.99 is due.")
    expect(banner).to_contain_text(f"Stripe tries your card again on {retry}")
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"next retry on {retry}")
    expect(page.get_by_test_id("billing-period")).not_to_contain_text("renews")
    expect(page.get_by_test_id("billing-status")).to_have_text("Past due")
    fits_the_screen(page)
    for path in ("/pricing", "/account", "/strategies/"):
        page.goto(site.url + path)
        expect(page.get_by_test_id("payment-banner")).to_contain_text("Your last payment failed.")
        expect(page.get_by_test_id("payment-banner").get_by_role("button", name="Update card")).to_be_visible()
        fits_the_screen(page)
    page.get_by_test_id("payment-banner").get_by_role("button", name="Update card").click()
    expect(page).to_have_url(re.compile("^" + re.escape(emulator.url) + "/p/session/"))


def test_a_subscription_to_the_zero_price_reads_free(sized):
    site, page = sized, sized.page
    subscribe(site, "zero@example.com", "pro")
    [sub] = site.stripe_subscriptions(site.user("zero@example.com").stripe_customer_id)
    site.emulator.client().v1.subscriptions.update(
        sub.id,
        {"items": [{"id": sub["items"]["data"][0]["id"], "price": "price_free_monthly"}], "proration_behavior": "none"},
    )
    page.goto(site.url + "/billing?from=portal")
    expect(page.get_by_test_id("billing-plan")).to_have_text("Free")
    expect(page.get_by_role("link", name="Cancel plan")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("renews on")
    fits_the_screen(page)
    page.goto(site.url + "/pricing")
    expect(page.locator("[data-plan=free]")).to_contain_text("Current plan")
    expect(page.locator("[data-plan=free]")).not_to_contain_text("Downgrade to Free")


def test_a_plan_ended_by_failed_payments_says_why(sized, webhooks_to_app):
    site, page, emulator = sized, sized.page, sized.emulator
    subscribe(site, "gone@example.com", "starter", FAILING_CARD)
    [row] = site.subscriptions("gone@example.com")
    emulator.advance(to=int(row["current_period_end"].timestamp()) + 60)
    emulator.flush()
    for _ in range(3):
        emulator.advance(days=3)
        emulator.flush()
    [row] = site.subscriptions("gone@example.com")
    assert row["status"] == "canceled"
    page.goto(site.url + "/billing")
    expect(page.get_by_test_id("plan-ended")).to_contain_text("Your Starter plan ended on")
    expect(page.get_by_test_id("plan-ended")).to_contain_text("because the payment failed")
    expect(page.get_by_test_id("invoices")).to_contain_text("Unpaid · plan ended")
    expect(page.get_by_test_id("billing-plan")).to_have_text("Free")
    fits_the_screen(page)


def test_a_declined_upgrade_changes_nothing_and_offers_the_card(sized):
    site, page = sized, sized.page
    subscribe(site, "declined@example.com", "starter", FAILING_CARD)
    site.choose("pro", "monthly")
    page.get_by_role("button", name="Confirm change").click()
    declined = page.get_by_test_id("card-declined")
    expect(declined).to_contain_text("Nothing changed and nothing was charged")
    expect(declined.get_by_role("button", name="Update card")).to_be_visible()
    expect(page.get_by_test_id("billing-plan")).to_have_text("Starter")
    fits_the_screen(page)


def test_leaving_checkout_keeps_the_chosen_cycle(sized):
    site, page = sized, sized.page
    site.signup("undecided@example.com")
    site.choose("pro", "yearly")
    page.locator("#back-link").click()
    expect(page.get_by_test_id("left-checkout")).to_contain_text("nothing was charged")
    expect(page.locator("#cycle-yearly")).to_be_checked()
    expect(page.locator("[data-plan=pro] form.choose-yearly button")).to_be_visible()
    fits_the_screen(page)


def test_admin_pages_fit_and_show_money_and_scheduled_downgrades(sized, webhooks_to_app):
    site, page = sized, sized.page
    subscribe(site, "audited@example.com", "pro")
    site.choose("starter", "monthly")
    page.get_by_role("button", name="Confirm change").click()
    expect(page.get_by_test_id("keep-plan")).to_be_visible()
    with site.app.app_context():
        UserFactory(email="boss@example.com", is_admin=True)
    log_in(site, "boss@example.com")
    page.goto(site.url + "/admin")
    audit = page.get_by_test_id("audit-log")
    expect(audit).to_contain_text("subscription.downgrade_scheduled")
    expect(audit).to_contain_text("amount $49.99")
    expect(audit).not_to_contain_text("4999")
    if os.environ.get("SCREEN_SHOTS"):  # for a person to look at, as in test_screens_read_right.py
        page.screenshot(path=f"{os.environ['SCREEN_SHOTS']}/admin-{page.viewport_size['width']}.png", full_page=True)
    fits_the_screen(page)
    page.goto(site.url + "/admin/users?email=audited@example.com")
    expect(page.get_by_test_id("user-audit")).to_contain_text("amount $49.99")
    fits_the_screen(page)


def test_invoices_navigation_and_the_locked_switch(sized):
    site, page = sized, sized.page
    subscribe(site, "tidy@example.com", "starter")
    page.goto(site.url + "/billing")
    view = page.get_by_test_id("invoices").get_by_role("link", name="View")
    expect(view).to_be_visible()
    box = view.bounding_box()
    assert box and box["x"] + box["width"] <= page.viewport_size["width"], box  # no hidden sideways scroll
    expect(page.locator(".site-nav a[aria-current=page]")).to_have_text("Billing")
    fits_the_screen(page)

    with site.app.app_context():
        user = site.user("tidy@example.com")
        db.session.add(AlertSettings(user_id=user.id, email_enabled=True, realtime_enabled=True))
        db.session.commit()
    page.goto(site.url + "/alerts/")
    switch = page.locator("#realtime_enabled")
    expect(switch).to_be_disabled()
    expect(switch).not_to_be_checked()
    expect(page.locator(".site-nav a[aria-current=page]")).to_have_text("Alerts")
    fits_the_screen(page)
