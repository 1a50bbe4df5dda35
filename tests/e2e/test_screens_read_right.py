"""Screens outside the billing pages, in Chromium at 1280 px and on a 390 px phone: the upgrade page says a correct
sentence for any feature, the account page shows a subscription to the $0 price as Free, and the backtests table and
the admin dashboard fit a phone (tables as stacked rows, chart labels thinned out so none overlaps)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.extensions import db
from app.services.strategies import create_strategy
from app.services.strategies import run_backtest as run_stored_backtest
from tests.e2e.test_billing_states import VIEWPORTS, fits_the_screen, log_in, subscribe
from tests.entitlements.conftest import put_on_plan
from tests.factories import UserFactory


@pytest.fixture(params=sorted(VIEWPORTS))
def sized(request, site):
    """The site with the browser page at one of the two widths."""
    site.page.set_viewport_size(VIEWPORTS[request.param])
    return site


def shot(page: Page, name: str) -> None:
    """A full-page screenshot in $SCREEN_SHOTS (for a person to look at), when that is set."""
    folder = os.environ.get("SCREEN_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{folder}/{name}-{page.viewport_size['width']}.png", full_page=True)


def cells_fit(page: Page, selector: str) -> None:
    """Every cell of the table is on the screen: no column hides behind a sideways scroll."""
    width = page.viewport_size["width"]
    cells = page.locator(f"{selector} td")
    assert cells.count() > 0, selector
    for i in range(cells.count()):
        box = cells.nth(i).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, (selector, i, box)


def test_the_upgrade_page_speaks_in_sentences(sized):
    site, page = sized, sized.page
    with site.app.app_context():
        UserFactory(email="free@example.com")
    log_in(site, "free@example.com")
    page.goto(site.url + "/alerts/")
    card = page.get_by_test_id("upgrade-required")
    expect(card.locator("h1")).to_have_text("The Starter plan includes email alerts")
    expect(card).to_contain_text("The Free plan does not include email alerts. Upgrade to Starter to use it.")
    expect(card).not_to_contain_text("comes with")
    fits_the_screen(page)
    shot(page, "upgrade-required")


def test_the_account_page_shows_a_zero_price_subscription_as_free(sized):
    site, page = sized, sized.page
    subscribe(site, "zero-account@example.com", "pro")
    [sub] = site.stripe_subscriptions(site.user("zero-account@example.com").stripe_customer_id)
    site.emulator.client().v1.subscriptions.update(
        sub.id,
        {"items": [{"id": sub["items"]["data"][0]["id"], "price": "price_free_monthly"}], "proration_behavior": "none"},
    )
    page.goto(site.url + "/billing?from=portal")
    expect(page.get_by_test_id("billing-plan")).to_have_text("Free")
    page.goto(site.url + "/account")
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")
    account = page.locator("main")
    expect(account).not_to_contain_text("Monthly")
    expect(account).not_to_contain_text("active")
    expect(account).not_to_contain_text("Renews")
    expect(page.get_by_test_id("plan-outlook")).to_have_count(0)
    fits_the_screen(page)
    shot(page, "account-free")


def test_the_backtests_table_fits_a_phone(sized):
    site, page = sized, sized.page
    with site.app.app_context():
        user = UserFactory(email="runner@example.com")
        put_on_plan(user.id, "starter")
        strategy = create_strategy(user.id, "Golden cross", rules="fast=20 slow=50")
        for start in ("2024-01-02", "2025-01-02"):
            run_stored_backtest(user.id, strategy.id, dt.date.fromisoformat(start), dt.date(2025, 12, 31))
        strategy_id = strategy.id
        db.session.remove()
    log_in(site, "runner@example.com")
    page.goto(f"{site.url}/strategies/{strategy_id}")
    table = "table:has(th:text-is('Max drawdown'))"
    expect(page.locator(table)).to_be_visible()
    shot(page, "strategy")
    cells_fit(page, table)
    fits_the_screen(page)


def test_the_admin_dashboard_fits_a_phone(sized, webhooks_to_app):
    site, page = sized, sized.page
    subscribe(site, "paying@example.com", "pro")
    with site.app.app_context():
        UserFactory(email="boss@example.com", is_admin=True)
    log_in(site, "boss@example.com")
    page.goto(site.url + "/admin")
    expect(page.get_by_test_id("audit-log")).to_be_visible()
    page.wait_for_function("window.Chart && Chart.getChart('mrr-chart')")
    shot(page, "admin")
    for table in page.locator(".admin table").all():
        if table.is_visible():
            for cell in table.locator("td").all():
                if not cell.is_visible():  # an empty cell a phone leaves out
                    continue
                box = cell.bounding_box()
                assert box and box["x"] + box["width"] <= page.viewport_size["width"] + 0.5, box
    for chart in ("mrr-chart", "activity-chart"):
        # Each x label gets at least 56 px of the axis: "Sep 30" never runs into the next one.
        room = page.evaluate(
            f"(() => {{ const x = Chart.getChart('{chart}').scales.x; return x.width / x.ticks.length; }})()"
        )
        assert room >= 56, (chart, room)
    fits_the_screen(page)
