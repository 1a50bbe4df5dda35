"""The emulator's hosted pages in Chromium at 1280 px and on a 390 px phone: the portal names the business, shows the
cardholder name typed at Checkout, says what a plan change does as its configuration sets it, and announces a
scheduled change; prorations read like Stripe's ("Unused time on Pro Plan after 1 Dec 2026", "−$33.33"); a paid
invoice says "Amount paid"; no page asks for a missing favicon; nothing is wider than the phone."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from emulator_helpers import new_checkout
from playwright.sync_api import Page, expect

VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
BUSINESS = "Smart Strategies Builder"


@pytest.fixture(params=sorted(VIEWPORTS))
def browser_page(request, page: Page) -> Page:
    """The browser page at one of the two widths, failing the test on any response of 400 or more."""
    page.set_viewport_size(VIEWPORTS[request.param])
    page.set_default_timeout(10_000)
    failures: list[str] = []
    page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield page
    assert not failures, failures


def fits_the_screen(page: Page) -> None:
    """Nothing wider than the screen, the Test mode badge inside it, and an icon the page carries (a browser that
    finds none asks for /favicon.ico, which is not there)."""
    assert (page.locator("link[rel=icon]").get_attribute("href") or "").startswith("data:image/"), page.url
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width, page.url
    for badge in page.locator(".badge-test").all():
        box = badge.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, box


def pay_in_browser(page: Page, client, price: str = "price_starter_monthly"):
    """Checkout for a customer who exists (as the app makes them), paid on the hosted page with a cardholder name."""
    customer = client.v1.customers.create({"email": "ada@example.com"})
    cs = new_checkout(client, price, customer=customer.id)
    page.goto(cs.url)
    fits_the_screen(page)
    page.fill("#card_number", "4242 4242 4242 4242")
    page.fill("#card_name", "Ada Lovelace")
    page.click("#submit")
    page.wait_for_url(re.compile(r"/success\?session_id="))
    return client.v1.subscriptions.retrieve(client.v1.checkout.sessions.retrieve(cs.id).subscription)


@pytest.fixture
def success_page(page):
    """The Checkout success URL of new_checkout (127.0.0.1:9) answered by the browser itself."""
    page.route(re.compile(r"^http://127\.0\.0\.1:9/"), lambda route: route.fulfill(status=200, body="ok"))


def test_the_portal_names_the_business_and_the_cardholder(emulator, client, browser_page, success_page):
    page = browser_page
    sub = pay_in_browser(page, client)
    config = client.v1.billing_portal.configurations.create(
        {
            "business_profile": {"headline": "Plans and invoices for your strategies"},
            "features": {"payment_method_update": {"enabled": True}, "invoice_history": {"enabled": True}},
        }
    )
    ps = client.v1.billing_portal.sessions.create(
        {"customer": sub.customer, "return_url": "http://127.0.0.1:9/billing", "configuration": config.id}
    )
    page.goto(ps.url)
    expect(page.locator("#return-link")).to_have_text(f"← Return to {BUSINESS}")
    expect(page.locator("#headline")).to_have_text("Plans and invoices for your strategies")
    expect(page.locator("#current-card")).to_contain_text("Ada Lovelace")
    fits_the_screen(page)
    row = page.locator("#invoices tbody tr").first  # the date and "View · PDF" each on one line, at 390 px too
    date = row.locator(".invoice-link").bounding_box()
    view, pdf = (link.bounding_box() for link in row.locator("td:last-child a").all())
    assert date and date["height"] < 30, date
    assert view and pdf and abs(view["y"] - pdf["y"]) < 2, (view, pdf)

    page.locator(".invoice-link").first.click()
    expect(page.locator("#amount-row")).to_contain_text("Amount paid")
    expect(page.locator("#amount-row")).to_contain_text("$19.99")
    fits_the_screen(page)


def test_plan_change_terms_follow_the_configuration(emulator, client, browser_page, success_page):
    page = browser_page
    sub = pay_in_browser(page, client, "price_pro_monthly")
    config = client.v1.billing_portal.configurations.create(
        {
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "proration_behavior": "none",
                    "products": [
                        {"product": "prod_starter", "prices": ["price_starter_monthly"]},
                        {"product": "prod_pro", "prices": ["price_pro_monthly"]},
                    ],
                    "schedule_at_period_end": {"conditions": [{"type": "decreasing_item_amount"}]},
                }
            }
        }
    )
    ps = client.v1.billing_portal.sessions.create({"customer": sub.customer, "configuration": config.id})
    page.goto(ps.url + "?section=update")
    ends = dt.datetime.fromtimestamp(sub["items"].data[0].current_period_end, dt.UTC)
    day = ends.strftime("%B %-d, %Y")
    terms = page.locator("#update-terms")
    expect(terms).to_contain_text(f"A cheaper plan starts at the end of your billing period on {day}")
    expect(terms).to_contain_text("There is no credit for unused time")
    expect(terms).not_to_contain_text("Changes take effect now")
    fits_the_screen(page)

    page.locator("button[data-price=price_starter_monthly]").click()
    expect(page.locator("#confirm-plan")).to_have_text("Starter Plan")
    expect(page.locator("#confirm-when")).to_contain_text(f"starts at the end of your billing period on {day}")
    expect(page.locator("#confirm-due")).to_have_text("$0.00")
    expect(page.locator("#confirm-next")).to_have_text("$19.99 per month")
    fits_the_screen(page)
    live = client.v1.subscriptions.retrieve(sub.id)
    assert live["items"].data[0].price.id == "price_pro_monthly" and not live.schedule  # nothing before Confirm
    page.click("#confirm-update")
    # The notice says what stays until then, the plan card what comes: not one sentence twice.
    expect(page.locator("#notice")).to_have_text(f"Change scheduled: you keep Pro Plan until {day}.")
    expect(page.locator("#pending-change")).to_have_text(
        f"Your plan changes to Starter Plan ($19.99 per month) on {day}."
    )
    expect(page.locator("#renewal")).not_to_contain_text("renews")
    fits_the_screen(page)
    live = client.v1.subscriptions.retrieve(sub.id)
    assert live["items"].data[0].price.id == "price_pro_monthly" and live.schedule

    emulator.advance(to=int(ends.timestamp()) + 60)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_starter_monthly"


def test_prorations_read_like_stripes(emulator, client, browser_page, success_page):
    page = browser_page
    sub = pay_in_browser(page, client, "price_pro_monthly")
    emulator.advance(days=10)
    immediate = client.v1.billing_portal.configurations.create(  # a switch to a cheaper plan made now (the default)
        {
            "features": {
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "products": [
                        {"product": "prod_starter", "prices": ["price_starter_monthly"]},
                        {"product": "prod_pro", "prices": ["price_pro_monthly"]},
                    ],
                }
            }
        }
    )
    ps = client.v1.billing_portal.sessions.create({"customer": sub.customer, "configuration": immediate.id})
    page.goto(ps.url + "?section=home")
    expect(page.locator("#pending-change")).to_have_count(0)
    page.goto(ps.url + "?section=update")
    expect(page.locator("#update-terms")).to_contain_text("Changes take effect now.")
    changed = dt.datetime.fromtimestamp(sub["items"].data[0].current_period_start + 10 * 86400, dt.UTC)
    day = changed.strftime("%-d %b %Y")
    unused, remaining = f"Unused time on Pro Plan after {day}", f"Remaining time on Starter Plan after {day}"
    page.locator("button[data-price=price_starter_monthly]").click()  # the confirmation shows the prorations
    renews = dt.datetime.fromtimestamp(sub["items"].data[0].current_period_end, dt.UTC).strftime("%B %-d, %Y")
    expect(page.locator("#confirm-when")).to_contain_text("Nothing is charged now")
    expect(page.locator("#confirm-when")).to_contain_text(f"your next invoice on {renews}")
    expect(page.locator("#confirm-lines")).to_contain_text(unused)
    expect(page.locator("#confirm-lines")).to_contain_text(remaining)
    expect(page.locator("#confirm-due")).to_have_text("$0.00")
    fits_the_screen(page)
    page.click("#cancel-update")  # Cancel: back to the portal, nothing changed
    expect(page.locator("#update-plan")).to_be_visible()
    expect(page.locator("#notice")).to_have_count(0)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_pro_monthly"
    page.goto(ps.url + "?section=update")
    page.locator("button[data-price=price_starter_monthly]").click()
    page.click("#confirm-update")
    expect(page.locator("#notice")).to_contain_text("Your plan was changed to Starter")

    emulator.advance(days=25)
    invoice = client.v1.invoices.list({"customer": sub.customer, "limit": 1}).data[0]
    lines = {line.description: line.amount for line in invoice.lines.data}
    assert unused in lines and remaining in lines, lines
    assert lines[unused] < 0 < lines[remaining]

    page.goto(invoice.hosted_invoice_url)
    expect(page.locator("tr", has_text=unused)).to_contain_text("\u2212$" + f"{-lines[unused] / 100:,.2f}")
    expect(page.locator("body")).not_to_contain_text("$-")
    fits_the_screen(page)


def test_each_test_card_number_stays_on_one_line(emulator, client, browser_page):
    """The Checkout page's test card numbers wrapped mid-number ("4000 0000 0000 / 0002") at 1280 and 390 px."""
    page = browser_page
    page.goto(new_checkout(client, "price_pro_monthly").url)
    codes = page.locator(".testcards code")
    assert codes.count() == 4
    for code in codes.all():
        lines = code.evaluate("element => element.getClientRects().length")  # one box per line an inline spans
        assert lines == 1 and re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", code.inner_text()), code.inner_text()
    fits_the_screen(page)
