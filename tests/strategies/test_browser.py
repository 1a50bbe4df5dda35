"""The strategy pages in Chromium at 1280 and 390 px: what a user sees, nothing wider than a phone's screen.

`STRATEGY_SCREENSHOTS=/some/dir pytest tests/strategies/test_browser.py` writes each page's screenshot there
(backtest.png and strategies.png at 1280 px are the README's); otherwise none is taken (a full-page screenshot costs
Chromium a few hundred ms of CPU, and nothing reads them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.services.backtesting import data_range, years_before
from app.services.strategies import NAME_MAX, create_strategy, run_backtest
from tests.entitlements.conftest import put_on_plan
from tests.factories import UserFactory

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def screenshot_folder() -> Path | None:
    """$STRATEGY_SCREENSHOTS, made if missing; None when it is not set."""
    if not os.environ.get("STRATEGY_SCREENSHOTS"):
        return None
    shots = Path(os.environ["STRATEGY_SCREENSHOTS"])
    shots.mkdir(parents=True, exist_ok=True)
    return shots


class Visit:
    """The logged-in browser page, checking every page it opens for overflow and CSP refusals."""

    def __init__(self, page: Page, base: str, size: str, shots: Path | None):
        self.page, self.base, self.size, self.shots = page, base, size, shots
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))

    def check(self, name: str) -> None:
        """The page fits the screen, the CSP refused nothing, and its screenshot is kept (with STRATEGY_SCREENSHOTS)."""
        self.page.wait_for_load_state("load")
        width = SIZES[self.size]["width"]
        assert self.page.evaluate("document.documentElement.scrollWidth") <= width, name
        assert not [
            m for m in self.messages if "Content Security Policy" in m or "Refused to" in m or "pageerror" in m
        ], self.messages
        suffix = "" if self.size == "desktop" else "-phone"
        if self.shots:
            self.page.screenshot(path=str(self.shots / f"{name}{suffix}.png"), full_page=True)

    def create_from_template(self, key: str) -> None:
        self.page.goto(self.base + "/strategies/new")
        self.page.get_by_test_id(f"template-{key}").click()
        expect(self.page.get_by_test_id(f"template-{key}")).to_have_attribute("aria-current", "true")
        self.check("new-strategy")
        self.page.get_by_role("button", name="Create strategy").click()
        expect(self.page.locator(".alert-success")).to_contain_text("created")

    def run_backtest(self, start: str | None = None) -> None:
        if start:
            self.page.fill("#start_date", start)
        self.page.get_by_role("button", name="Run backtest").click()
        expect(self.page.locator("h1")).to_have_text("Backtest result")


@pytest.fixture
def visit(seeded, live_server, page, request) -> Visit:
    """A Starter member logged in through the real form, at the test's screen size."""
    size = request.param
    with seeded.app_context():
        user = UserFactory(email="trader@example.com")
        put_on_plan(user.id, "starter")
    page.set_default_timeout(10_000)
    page.set_viewport_size(SIZES[size])
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "trader@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(live_server.url + "/account")
    return Visit(page, live_server.url, size, screenshot_folder())


@pytest.mark.parametrize("visit", list(SIZES), indirect=True)
def test_a_backtest_shows_its_curve_against_buy_and_hold_and_its_trades(visit):
    page = visit.page
    visit.create_from_template("swing")
    expect(page.get_by_test_id("history-limit")).to_contain_text("Starter plan: 5 years of history")
    visit.check("strategy")
    visit.run_backtest()  # the default range
    chart = page.get_by_test_id("chart-equity")
    expect(chart).to_be_visible()
    chart_width = chart.locator("svg").bounding_box()["width"]
    for series in ("strategy", "hold"):
        box = chart.locator(f"polyline[data-series={series}]").bounding_box()
        assert box and box["width"] > 0.95 * chart_width and box["height"] > 10, series
    expect(page.get_by_test_id("chart-legend")).to_contain_text("Buy & hold")
    expect(page.get_by_test_id("chart-drawdown")).to_be_visible()
    assert page.get_by_test_id("trade-row").count() > 2
    expect(page.get_by_test_id("trade-row").first).to_contain_text(re.compile(r"\d{1,2} \w{3} \d{4}\s+Buy\s+\$"))
    expect(page.get_by_test_id("final-equity")).to_have_text(re.compile(r"^\$\d{1,3}(,\d{3})*\.\d{2}$"))
    expect(page.get_by_test_id("no-trade")).to_have_count(0)
    assert chart_width > (250 if visit.size == "phone" else 700)
    visit.check("backtest")


@pytest.mark.parametrize("visit", list(SIZES), indirect=True)
def test_a_range_without_a_trade_says_why(visit):
    page = visit.page
    visit.create_from_template("golden-cross")
    visit.run_backtest("2025-06-02")
    expect(page.get_by_test_id("no-trade")).to_contain_text("the slow average needs 200 trading days")
    expect(page.get_by_test_id("no-trades")).to_be_visible()
    expect(page.get_by_test_id("chart-equity")).to_be_visible()
    visit.check("backtest-no-trade")


@pytest.mark.parametrize("visit", list(SIZES), indirect=True)
def test_the_list_shows_the_last_result_and_delete_asks_first(visit):
    page = visit.page
    visit.create_from_template("momentum")
    visit.run_backtest()
    total = page.get_by_test_id("metric").first.inner_text()
    visit.create_from_template("medium")
    page.goto(visit.base + "/strategies/")
    rows = page.get_by_test_id("strategy-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).get_by_test_id("last-result")).to_contain_text(total)
    expect(rows.nth(0).get_by_test_id("last-result")).to_contain_text("Last backtest")
    expect(rows.nth(1).get_by_test_id("last-result")).to_have_text("Not backtested yet")
    visit.check("strategies")
    rows.nth(1).get_by_role("link", name="Edit").click()
    expect(page.locator("h1")).to_have_text("Edit strategy")
    expect(page.get_by_test_id("templates")).to_have_count(0)  # templates start new strategies only
    visit.check("edit-strategy")
    page.goto(visit.base + "/strategies/")

    rows.nth(0).get_by_role("link", name="Delete").click()
    expect(page.locator("h1")).to_have_text("Delete “Short-term momentum”?")
    expect(page.get_by_test_id("delete-backtests")).to_contain_text("its 1 backtest result")
    expect(page.get_by_test_id("delete-allowance")).to_contain_text("1 of 500 used")
    visit.check("delete")
    page.get_by_role("link", name="Keep it").click()
    page.goto(visit.base + "/strategies/")
    expect(rows).to_have_count(2)  # keeping it deleted nothing

    rows.nth(0).get_by_role("link", name="Delete").click()
    page.get_by_test_id("confirm-delete-button").click()
    expect(page.locator(".alert-info")).to_contain_text("deleted")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Medium-term trend")


LONG = "W" * 200  # a description or billing name with no space to wrap at
LONG_NAME = "W" * NAME_MAX


@pytest.mark.parametrize("size", list(SIZES))
def test_long_unbroken_names_wrap_instead_of_widening_the_pages(seeded, live_server, page, size):
    """A strategy's name (120 characters, the most there is) and description and a billing name of 200 characters,
    none with a space: every page that shows them (the strategy pages, alerts, the admin's) stays as wide as the
    screen."""
    with seeded.app_context():
        user = UserFactory(email="wide@example.com", name=LONG, is_admin=True)
        put_on_plan(user.id, "pro")
        strategy = create_strategy(user.id, LONG_NAME, LONG + " " + LONG, "fast=20 slow=50")
        first, last = data_range()
        backtest = run_backtest(user.id, strategy.id, years_before(last, 2), last)
        paths = {
            "long-strategies": "/strategies/",
            "long-strategy": f"/strategies/{strategy.id}",
            "long-backtest": f"/strategies/{strategy.id}/backtests/{backtest.id}",
            "long-delete": f"/strategies/{strategy.id}/delete",
            "long-alerts": "/alerts/",
            "long-admin": "/admin",
            "long-admin-user": "/admin/users?email=wide@example.com",
        }
    page.set_viewport_size(SIZES[size])
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "wide@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(live_server.url + "/account")
    visit = Visit(page, live_server.url, size, screenshot_folder())
    for name, path in paths.items():
        page.goto(live_server.url + path)
        if name != "long-admin":  # the dashboard names no strategy and no billing name
            expect(page.get_by_text(LONG_NAME[:50], exact=False).first).to_be_visible()
        visit.check(name)
    page.goto(live_server.url + paths["long-delete"])
    page.get_by_test_id("confirm-delete-button").click()
    expect(page.locator(".alert-info")).to_contain_text(LONG_NAME)  # the message names it
    visit.check("long-deleted")
