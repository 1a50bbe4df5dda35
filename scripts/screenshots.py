#!/usr/bin/env python
"""Regenerate the README's billing screenshots: `.venv/bin/python scripts/screenshots.py [out_dir]`.

Boots the app (development config, a throw-away SQLite database) and the bundled Stripe emulator on free ports,
pays through the emulator's hosted Checkout in Chromium (Debian's, as in the tests) and writes, 1280 px wide:

- success.png            the success page right after paying for Pro monthly
- billing.png            the billing page of that Pro user, with its invoice
- confirm-change.png     the Starter → Pro confirmation page with the amount due now
- confirm-cancel.png     that Pro user's cancellation confirmation (until when, what Free leaves out)
- review-plan.png        a visitor chose Pro yearly on the pricing page, signed up, logged in, and reviews the choice
- confirm-downgrade.png  Pro → Starter: what Starter leaves out, nothing due today
- pending-downgrade.png  the billing page with that downgrade scheduled, and "Keep Pro"
- pricing-pending.png    the pricing page then: "Keep Pro" on Pro, "Starts …" on Starter
- past-due.png           a Starter renewal failed (card 4000 0000 0000 0341): amount due, next retry, Update card
- emulator-portal.png    the emulator's hosted portal of the Pro user with the downgrade scheduled: "Return to" the
                         business, the cardholder name typed at Checkout, "Your plan changes to Starter on …"

and the states' phone views, 390 px wide: billing-390.png, confirm-downgrade-390.png, pending-downgrade-390.png,
past-due-390.png, emulator-portal-390.png.

Not part of `make test`; run it after changing the billing templates or app.css.
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright  # noqa: E402
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server  # noqa: E402

from app import create_app  # noqa: E402
from app.services.catalog import seed_plans_from_config  # noqa: E402
from stripe_emulator.testing import EmulatorServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-quic"]
WIDTH, HEIGHT = 1280, 800
PHONE: ViewportSize = {"width": 390, "height": 844}
FAILING_CARD = "4000 0000 0000 0341"
PASSWORD = "correct horse battery"


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def serve(app) -> tuple[str, BaseWSGIServer]:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def build_app(database: Path, emulator_url: str):
    app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{database}",
            "STRIPE_API_BASE": emulator_url,
            "MAIL_SUPPRESS_SEND": "true",
            "REQUIRE_VERIFIED_EMAIL": "false",  # the journeys pay right after signing up
        }
    )
    with app.app_context():
        upgrade()
        seed_plans_from_config()
    return app


def signup(page: Page, base: str, email: str) -> None:
    page.goto(base + "/signup")
    create_account(page, email)
    expect(page.get_by_test_id("current-plan")).to_be_visible()


def create_account(page: Page, email: str) -> None:
    """Sign up on the page shown, then log in on the page sign-up leads to (filled in with the address)."""
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.get_by_role("heading", name="Now log in")).to_be_visible()
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()


def subscribe(
    page: Page, base: str, emulator_url: str, plan: str, name: str, card: str = "4242 4242 4242 4242"
) -> None:
    page.goto(base + "/pricing")
    page.locator(f"[data-plan={plan}] form.choose-monthly button").click()
    expect(page).to_have_url(re.compile("^" + re.escape(emulator_url) + "/c/pay/"))
    page.fill("#card_number", card)
    page.fill("#card_name", name)
    page.click("#submit")
    expect(page.get_by_test_id("success-plan")).to_be_visible()


def shoot(page: Page, out_dir: Path, name: str, phone: bool = False) -> None:
    """A full-page screenshot at 1280 px, and with `phone` the same page again at 390 px."""
    page.screenshot(path=str(out_dir / f"{name}.png"), full_page=True)
    if phone:
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(out_dir / f"{name}-390.png"), full_page=True)
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})


def pro_user(page: Page, base: str, emulator, out_dir: Path) -> None:
    """Pay for Pro; its success page, billing page and cancellation; then a downgrade to Starter and Keep Pro."""
    subscribe(page, base, emulator.url, "pro", "Ada Lovelace")
    page.screenshot(path=str(out_dir / "success.png"), full_page=True)
    page.goto(base + "/billing")
    expect(page.get_by_test_id("invoices")).to_be_visible()
    shoot(page, out_dir, "billing", phone=True)
    page.get_by_role("link", name="Cancel plan").click()
    expect(page.get_by_role("button", name="Cancel at period end")).to_be_visible()
    page.screenshot(path=str(out_dir / "confirm-cancel.png"), full_page=True)
    page.goto(base + "/pricing")
    page.locator("[data-plan=starter] form.choose-monthly button").click()
    expect(page.get_by_test_id("change-losses")).to_be_visible()
    shoot(page, out_dir, "confirm-downgrade", phone=True)
    page.get_by_role("button", name="Confirm change").click()
    expect(page.get_by_test_id("keep-plan")).to_be_visible()
    shoot(page, out_dir, "pending-downgrade", phone=True)
    page.goto(base + "/pricing")
    expect(page.get_by_test_id("scheduled-plan")).to_be_visible()
    shoot(page, out_dir, "pricing-pending")
    page.goto(base + "/billing")
    page.get_by_role("button", name="Manage billing").click()
    expect(page.locator("#pending-change")).to_be_visible()
    shoot(page, out_dir, "emulator-portal", phone=True)


def starter_user(page: Page, base: str, emulator, out_dir: Path) -> None:
    """Pay for Starter; the Starter → Pro confirmation with the amount due now."""
    subscribe(page, base, emulator.url, "starter", "Grace Hopper")
    page.goto(base + "/pricing")
    page.locator("[data-plan=pro] form.choose-monthly button").click()
    expect(page.get_by_test_id("amount-due")).to_be_visible()
    page.screenshot(path=str(out_dir / "confirm-change.png"), full_page=True)


def late_payer(page: Page, base: str, emulator, out_dir: Path) -> None:
    """Pay for Starter with a card that fails at renewal, move the clock past the renewal: past due."""
    subscribe(page, base, emulator.url, "starter", "Alan Turing", card=FAILING_CARD)
    emulator.advance(days=32)
    emulator.flush()
    page.goto(base + "/billing")
    expect(page.get_by_test_id("past-due-banner")).to_be_visible()
    shoot(page, out_dir, "past-due", phone=True)


def visitor_choice(page: Page, base: str, out_dir: Path) -> None:
    """A visitor picks Pro yearly on the pricing page, signs up, logs in, and reviews the choice."""
    page.goto(base + "/pricing")
    page.locator("label[for=cycle-yearly]").click()
    page.locator("[data-plan=pro] a.choose-yearly").click()
    create_account(page, "linus@example.com")
    expect(page.get_by_role("button", name="Continue to secure checkout")).to_be_visible()
    page.screenshot(path=str(out_dir / "review-plan.png"), full_page=True)


SHOTS = (
    "success.png",
    "billing.png",
    "billing-390.png",
    "confirm-change.png",
    "confirm-cancel.png",
    "review-plan.png",
    "confirm-downgrade.png",
    "confirm-downgrade-390.png",
    "pending-downgrade.png",
    "pending-downgrade-390.png",
    "pricing-pending.png",
    "past-due.png",
    "past-due-390.png",
    "emulator-portal.png",
    "emulator-portal-390.png",
)


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssb-screenshots-") as tmp, EmulatorServer() as emulator:
        app = build_app(Path(tmp) / "app.db", emulator.url)
        base, server = serve(app)
        # Renewals and retries reach the app as they would from Stripe.
        emulator.add_webhook(
            base + app.config["API_PREFIX"] + "/billing/webhooks/stripe", app.config["STRIPE_WEBHOOK_SECRET"]
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                journeys = (
                    ("ada@example.com", pro_user),
                    ("grace@example.com", starter_user),
                    ("alan@example.com", late_payer),
                )
                for email, journey in journeys:
                    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                    page = context.new_page()
                    signup(page, base, email)
                    journey(page, base, emulator, out_dir)
                    context.close()
                context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                visitor_choice(context.new_page(), base, out_dir)
                context.close()
                browser.close()
        finally:
            server.shutdown()
    for name in SHOTS:
        print(f"✓ {out_dir / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
