"""The audit log's long Stripe ids (a Checkout Session's `cs_test_…` is 66 characters) are shown whole at 1280 px
and on a phone: they wrap inside their cell instead of being cut off by the table's scroll box.

`ADMIN_SCREENSHOT_DIR=/some/dir` keeps the screenshots (none is taken otherwise: a full-page screenshot costs
Chromium a few hundred ms of CPU, and nothing reads it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.extensions import db
from app.models import AuditLog
from tests.factories import UserFactory

SESSION_ID = "cs_test_a1Zq9XbV0c2Lk8Jh3Gf4Ds5Ap6Oi7Uy8Tr9Ew0Qm1Nb2Vc3Xz4Lk5Jh6Gf7Ds8Ap9Oi0U"
SIZES = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

#: Every audit detail's box against the scroll box of the table: nothing past its right edge, nothing clipped.
CLIPPED = """() => {
    const box = document.querySelector('[data-testid=audit-log]').closest('.table-responsive');
    const right = box.getBoundingClientRect().right;
    return [...document.querySelectorAll('[data-testid=audit-log] .admin-kv')]
        .filter(kv => kv.getBoundingClientRect().right > right + 0.5 || kv.scrollWidth > kv.clientWidth + 0.5)
        .map(kv => kv.textContent.trim()); }"""


@pytest.mark.parametrize("size", list(SIZES))
def test_a_checkout_session_id_in_the_audit_log_is_shown_whole(size, seeded, live_server, page):
    with seeded.app_context():
        UserFactory(email="admin@example.com", is_admin=True)
        customer = UserFactory(email="a-rather-long-customer-address@example.com")
        db.session.add(
            AuditLog(
                user_id=customer.id,
                action="checkout.started",
                details={"session": SESSION_ID, "plan": "pro", "billing_cycle": "yearly"},
            )
        )
        db.session.commit()
    page.set_viewport_size(SIZES[size])
    page.goto(live_server.url + "/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", "correct horse")
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state("load")
    page.goto(live_server.url + "/admin")
    page.wait_for_load_state("load")
    log = page.get_by_test_id("audit-log")
    assert SESSION_ID in log.inner_text().replace("\n", "")
    assert page.evaluate(CLIPPED) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"]
    if os.environ.get("ADMIN_SCREENSHOT_DIR"):
        target = Path(os.environ["ADMIN_SCREENSHOT_DIR"]) / f"admin-audit-{size}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        log.scroll_into_view_if_needed()
        page.screenshot(path=str(target), full_page=True)
