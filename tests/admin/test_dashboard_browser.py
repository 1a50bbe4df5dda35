"""The dashboard in Chromium: charts drawn by the vendored Chart.js, no CSP violation, and the screenshot.

`ADMIN_SCREENSHOT=docs/screenshots/admin.png pytest tests/admin/test_dashboard_browser.py` refreshes the README's
screenshot; otherwise it is written to the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.extensions import db
from tests.admin.conftest import add_subscription, demo_book
from tests.factories import UserFactory


def test_the_dashboard_draws_its_charts_under_the_csp(seeded, live_server, page, tmp_path):
    with seeded.app_context():
        UserFactory(email="admin@example.com", is_admin=True)
    demo_book(seeded)
    messages: list[str] = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("form button[type=submit]").last.click()
    page.wait_for_load_state("load")
    page.goto(live_server.url + "/admin")
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").inner_text() == "Billing overview"
    # Chart.js ran (from /static, no CDN) and drew both charts: their canvases hold non-blank pixels.
    drawn = page.evaluate("""() => ['mrr-chart', 'activity-chart'].map(id => {
        const chart = Chart.getChart(id);
        return chart ? chart.data.datasets[0].data.length : 0; })""")
    assert drawn == [90, 30]
    assert not [m for m in messages if "Content Security Policy" in m or "Refused to" in m or "pageerror" in m], (
        messages
    )
    target = Path(os.environ.get("ADMIN_SCREENSHOT") or tmp_path / "admin.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


#: Each stacked label (`data-label`, drawn by ::before) against the width its text needs on one line.
LABEL_WIDTHS = """() => [...document.querySelectorAll('.table-stack td[data-label]')].map(td => {
    const label = getComputedStyle(td, '::before');
    const probe = document.createElement('span');
    probe.textContent = td.dataset.label;
    probe.style.font = label.font;
    probe.style.letterSpacing = label.letterSpacing;
    probe.style.whiteSpace = 'nowrap';
    probe.style.position = 'absolute';
    probe.style.display = 'inline-block';
    document.body.append(probe);
    const needed = probe.getBoundingClientRect().width;
    probe.remove();
    return [td.dataset.label, parseFloat(label.width), needed]; })"""


def test_a_users_page_on_a_phone_keeps_each_label_whole(seeded, live_server, page):
    """A Stripe subscription id breaks anywhere (`stack-break`) to fit a phone; its label ("Subscription") must not:
    it broke as "Subscriptio / n"."""
    with seeded.app_context():
        UserFactory(email="admin@example.com", is_admin=True)
        customer = UserFactory(email="customer@example.com", stripe_customer_id="cus_QdWxyZ2eZvKYlo")
        row = add_subscription(customer, "pro", "yearly")
        row.stripe_subscription_id = "sub_1QdWxyZ2eZvKYlo2C0aBcDeFgH"
        db.session.commit()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state("load")
    page.goto(live_server.url + "/admin/users?email=customer@example.com")
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    widths = page.evaluate(LABEL_WIDTHS)
    assert "Subscription" in [label for label, *_ in widths], widths
    assert [(label, width, needed) for label, width, needed in widths if width + 0.5 < needed] == [], widths
    if os.environ.get("ADMIN_SCREENSHOT_DIR"):  # for a person to look at (nothing checks it): only when asked for
        target = Path(os.environ["ADMIN_SCREENSHOT_DIR"]) / "admin-user-phone.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
