"""The Alerts page in Chromium at 1280 and 390 px: watched strategies, last signals, the next evaluation, the
real-time switch after a downgrade; nothing wider than a phone's screen.

`ALERT_SCREENSHOTS=/some/dir pytest tests/alerts/test_browser.py` keeps the screenshots there (none is taken
otherwise: a full-page screenshot costs Chromium a few hundred ms of CPU, and nothing reads it).
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from playwright.sync_api import expect

from app.services.alerts import evaluate_watched
from tests.alerts.conftest import BUY_DAY, SELL_DAY, switches, watch
from tests.entitlements.conftest import put_on_plan
from tests.factories import UserFactory

SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def fits(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("size", list(SIZES))
def test_the_alerts_page_after_a_downgrade_from_pro(size, seeded, live_server, page):
    app = seeded
    with app.app_context():
        user = UserFactory(email="trader@example.com")
        put_on_plan(user.id, "pro")
        user_id = user.id
    switches(app, user_id, email_enabled=True, realtime_enabled=True)
    watch(app, user_id, "Short-term momentum", "fast=5 slow=20")
    watch(app, user_id, "Swing trend with a rather long name for a phone", "fast=3 slow=10")
    later = watch(app, user_id, "Medium-term trend", "fast=50 slow=100")
    with app.app_context():
        for day in (date(2025, 12, 3), date(2025, 12, 9), date(2025, 12, 12), BUY_DAY, SELL_DAY):
            evaluate_watched(day)  # Pro: mailed at once
        put_on_plan(user_id, "starter")
    app.config["TASK_QUEUE_URL"] = app.config["REDIS_URL"]  # as deployed: the queue's cron evaluates

    page.set_default_timeout(10_000)
    page.set_viewport_size(SIZES[size])
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "trader@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    page.goto(live_server.url + "/alerts/")

    switch = page.locator("#realtime_enabled")
    expect(switch).to_be_disabled()
    expect(switch).not_to_be_checked()
    expect(page.get_by_test_id("realtime-stopped")).to_contain_text(
        "stopped when your plan became Starter, which does not include them"
    )
    expect(page.get_by_test_id("delivery")).to_contain_text("A daily digest at 23:00 UTC")
    expect(page.get_by_test_id("next-evaluation")).to_contain_text("22:15 UTC")
    expect(page.get_by_test_id("signal")).to_have_count(5)
    expect(page.get_by_test_id("signal").first).to_contain_text("Short-term momentum")
    expect(page.get_by_test_id("watch-count")).to_have_text("3 of 3 strategies")
    fits(page, SIZES[size]["width"])
    if os.environ.get("ALERT_SCREENSHOTS"):
        shots = Path(os.environ["ALERT_SCREENSHOTS"])
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / f"alerts-{size}.png"), full_page=True)

    page.locator(f"[data-strategy-id='{later}'] [data-testid=unwatch]").click()
    expect(page.locator(".alert-success")).to_contain_text("Stopped watching “Medium-term trend”")
    expect(page.get_by_test_id("watch-count")).to_have_text("2 of 3 strategies")
    page.locator(f"[data-strategy-id='{later}'] [data-testid=watch]").click()
    expect(page.locator(".alert-success")).to_contain_text("Watching “Medium-term trend”")
    fits(page, SIZES[size]["width"])
