"""Pricing in Chromium, at 1280 px and on a 390 px phone, while a change is pending: after "Cancel at period end"
the Pro card says when Pro ends, that it changes to Free, and keeps Pro with one click (the resume); after "Switch to
yearly" its undo button says it keeps monthly billing (Pro stays either way). Nothing wider than the screen.

`SCREEN_SHOTS=/some/dir` keeps full-page screenshots there (pricing-canceling-1280.png, …) for a person to look at.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from app.templating import date
from tests.e2e.test_billing_states import VIEWPORTS, fits_the_screen, subscribe
from tests.e2e.test_screens_read_right import shot


@pytest.fixture(params=sorted(VIEWPORTS))
def sized(request, site):
    """The site with the browser page at one of the two widths."""
    site.page.set_viewport_size(VIEWPORTS[request.param])
    return site


def test_a_pending_cancellation_reads_on_the_pro_card_and_pro_is_kept_from_there(sized, webhooks_to_app):
    site, page = sized, sized.page
    subscribe(site, "leaving@example.com", "pro")
    [row] = site.subscriptions("leaving@example.com")
    ends = date(row["current_period_end"])

    page.goto(site.url + "/billing")
    page.get_by_role("link", name="Cancel plan").click()
    page.get_by_role("button", name="Cancel at period end").click()
    expect(page.get_by_test_id("billing-status")).to_have_text(f"Ends {ends}")

    page.goto(site.url + "/pricing")
    pro = page.locator("[data-plan=pro]")
    expect(page.locator("[data-plan=free] .plan-action")).to_contain_text(f"Free from {ends}")
    expect(pro.locator(".choose-monthly .plan-pending")).to_have_text(f"Ends {ends}: changes to Free")
    expect(pro.locator(".choose-monthly")).not_to_contain_text("Current plan")
    keep = pro.get_by_role("button", name="Keep Pro monthly")
    expect(keep).to_be_visible()
    fits_the_screen(page)
    shot(page, "pricing-canceling")

    keep.click()
    expect(page).to_have_url(re.compile(r"/billing$"))
    expect(page.get_by_role("alert").first).to_contain_text("Welcome back — your Pro plan will renew.")
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"renews on {ends}")
    [row] = site.subscriptions("leaving@example.com")
    assert row["cancel_at_period_end"] is False
    [sub] = site.stripe_subscriptions(site.user("leaving@example.com").stripe_customer_id)
    assert sub.cancel_at_period_end is False

    page.goto(site.url + "/pricing")
    expect(pro.locator(".choose-monthly")).to_have_text("Current plan")
    expect(page.locator(".plan-pending")).to_have_count(0)


def test_a_scheduled_switch_to_yearly_is_undone_by_keeping_monthly_billing(sized, webhooks_to_app):
    site, page = sized, sized.page
    subscribe(site, "yearly@example.com", "pro")
    [row] = site.subscriptions("yearly@example.com")
    ends = date(row["current_period_end"])

    site.choose("pro", "yearly")
    expect(page).to_have_url(re.compile(r"/billing/change\?plan=pro&cycle=yearly"))
    page.get_by_role("button", name="Confirm change").click()
    keep = page.get_by_test_id("keep-plan")
    expect(keep).to_have_text("Keep monthly billing")
    fits_the_screen(page)
    shot(page, "billing-cycle-change")

    page.goto(site.url + "/pricing")
    pro = page.locator("[data-plan=pro]")
    expect(pro.locator(".choose-monthly .plan-pending")).to_have_text(f"Ends {ends}: changes to Pro (yearly)")
    expect(page.get_by_role("button", name=re.compile("^Keep Pro"))).to_have_count(0)
    fits_the_screen(page)
    shot(page, "pricing-cycle-change")

    pro.get_by_role("button", name="Keep monthly billing").click()
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"renews on {ends}")
    expect(page.get_by_test_id("keep-plan")).to_have_count(0)
    [sub] = site.stripe_subscriptions(site.user("yearly@example.com").stripe_customer_id)
    assert sub.schedule is None
