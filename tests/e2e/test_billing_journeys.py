"""The issue's "Done when" in Chromium: sign up → Checkout → success before any webhook → invoice → Portal →
cancel → resume; a declined card; Starter → Pro on the same subscription. App and emulator over HTTP."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from app.templating import date


def test_pro_monthly_from_signup_to_cancel_and_resume(site, webhooks_to_app):
    page, emulator = site.page, site.emulator
    emulator.chaos(hold=1)  # every webhook is kept back until released: the success page must not need one
    site.signup("ada@example.com")
    site.choose("pro", "monthly")
    site.pay("4242 4242 4242 4242")

    expect(page).to_have_url(re.compile(r"/billing/success\?session_id=cs_"))
    expect(page.get_by_test_id("success-plan")).to_have_text("Pro")
    expect(page.get_by_test_id("success-amount")).to_have_text("$49.99")
    assert emulator.deliveries() == [], "a webhook was delivered before the success page"
    assert emulator.emulator.dispatcher.pending()["held"] > 0  # events exist; they are only held back
    [before] = site.subscriptions("ada@example.com")
    assert (before["plan"], before["billing_cycle"], before["status"]) == ("pro", "monthly", "active")
    expect(page.get_by_test_id("success-renewal")).to_have_text(date(before["current_period_end"]))
    actions_before = site.audit_actions()
    assert actions_before.count("subscription.activated") == 1

    # The held events arrive now; they confirm what the success page wrote and change nothing.
    emulator.release()
    emulator.flush()
    delivered = emulator.deliveries()
    assert delivered and all(d["ok"] for d in delivered), delivered
    assert {"checkout.session.completed", "customer.subscription.created", "invoice.paid"} <= {
        d["type"] for d in delivered
    }
    assert site.subscriptions("ada@example.com") == [before]
    assert site.audit_actions().count("subscription.activated") == 1

    page.get_by_role("link", name="Go to billing").click()
    expect(page.get_by_test_id("billing-plan")).to_have_text("Pro")
    invoices = page.get_by_test_id("invoices").locator("tbody tr")
    expect(invoices).to_have_count(1)
    expect(invoices.first).to_contain_text("$49.99")
    expect(invoices.first).to_contain_text("Paid")
    expect(page.get_by_test_id("billing-card")).to_have_text("Visa •••• 4242")

    # The Customer Portal: cancel there, then follow its return link back to /billing, which shows the
    # cancellation at once although its webhook is held back again.
    emulator.chaos(hold=1)
    delivered_so_far = len(emulator.deliveries())
    page.get_by_role("button", name="Manage billing").click()
    expect(page).to_have_url(re.compile("^" + re.escape(emulator.url) + "/p/session/"))
    page.get_by_role("link", name="Cancel plan").click()
    page.click("#confirm-cancel")
    expect(page.locator("#renewal")).to_contain_text("Your plan will be canceled on")
    page.click("#return-link")
    expect(page).to_have_url(re.compile(re.escape(site.url) + r"/billing"))
    ends = date(before["current_period_end"])
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"Pro until {ends}")
    [canceling] = site.subscriptions("ada@example.com")
    assert canceling["cancel_at_period_end"] and canceling["status"] == "active"
    assert len(emulator.deliveries()) == delivered_so_far, "the cancellation's webhook was not held back"
    emulator.release()

    # Resume on our own billing page.
    page.get_by_role("button", name="Resume Pro").click()
    expect(page.get_by_role("alert")).to_contain_text("Welcome back")
    expect(page.get_by_test_id("billing-period")).to_contain_text(f"renews on {ends}")
    [resumed] = site.subscriptions("ada@example.com")
    assert not resumed["cancel_at_period_end"]
    [stripe_sub] = site.stripe_subscriptions(site.user("ada@example.com").stripe_customer_id)
    assert stripe_sub.cancel_at_period_end is False and stripe_sub.status == "active"
    emulator.flush()
    assert site.subscriptions("ada@example.com") == [resumed]  # the later webhooks agree
    actions = site.audit_actions()
    assert actions.count("subscription.cancel_scheduled") == 1 and actions.count("subscription.resumed") == 1


def test_declined_card_shows_the_error_and_leaves_the_user_on_free(site):
    page = site.page
    site.signup("declined@example.com")
    site.choose("pro", "monthly")
    site.pay("4000 0000 0000 0002")

    expect(page.locator("#card-error")).to_contain_text("declined")
    expect(page).to_have_url(re.compile("^" + re.escape(site.emulator.url) + "/c/pay/cs_"))
    assert site.subscriptions("declined@example.com") == []

    page.goto(site.url + "/pricing")
    expect(page.locator("[data-plan=free] .btn-current")).to_have_text("Current plan")
    expect(page.locator("[data-plan=pro] .btn-current")).to_have_count(0)
    page.goto(site.url + "/account")
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")


def test_starter_to_pro_upgrade_keeps_one_subscription(site):
    page = site.page
    site.signup("grace@example.com")
    site.choose("starter", "monthly")
    site.pay()
    expect(page.get_by_test_id("success-plan")).to_have_text("Starter")

    site.choose("pro", "monthly")  # a paying user is sent to the confirmation page, not to a second Checkout
    expect(page).to_have_url(re.compile(r"/billing/change\?plan=pro&cycle=monthly$"))
    expect(page.get_by_test_id("change-to")).to_have_text("Pro · monthly")
    amount = page.get_by_test_id("amount-due")
    expect(amount).to_have_text(re.compile(r"^\$\d+\.\d\d$"))
    assert amount.inner_text() != "$0.00"  # an upgrade is invoiced now
    page.get_by_role("button", name="Confirm change").click()

    expect(page).to_have_url(re.compile(re.escape(site.url) + r"/billing$"))
    expect(page.get_by_role("alert")).to_contain_text("You are now on Pro (monthly).")
    expect(page.get_by_test_id("billing-plan")).to_have_text("Pro")

    customer_id = site.user("grace@example.com").stripe_customer_id
    [stripe_sub] = site.stripe_subscriptions(customer_id)
    assert stripe_sub.status == "active" and stripe_sub["items"].data[0].price.id == "price_pro_monthly"
    [row] = site.subscriptions("grace@example.com")
    assert (row["stripe_subscription_id"], row["plan"], row["status"]) == (stripe_sub.id, "pro", "active")
