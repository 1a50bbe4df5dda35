#!/usr/bin/env python
"""Regenerate the README's billing screenshots: `.venv/bin/python scripts/screenshots.py [out_dir]`.

Boots the app (development config, a throw-away SQLite database) and the bundled Stripe emulator on free ports,
pays through the emulator's hosted Checkout in Chromium (Debian's, as in the tests) and writes, 1280 px wide:

- success.png         the success page right after paying for Pro monthly
- billing.png         the billing page of that Pro user, with its invoice
- confirm-change.png  the Starter → Pro confirmation page with the amount due now
- confirm-cancel.png  that Pro user's cancellation confirmation (until when, what Free leaves out)
- review-plan.png     a visitor chose Pro yearly on the pricing page, signed up, and reviews the choice

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
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server  # noqa: E402

from app import create_app  # noqa: E402
from app.services.catalog import seed_plans_from_config  # noqa: E402
from stripe_emulator.testing import EmulatorServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-quic"]
WIDTH, HEIGHT = 1280, 800
PASSWORD = "correct horse battery"


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def serve(app) -> tuple[str, BaseWSGIServer]:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def build_app(database: Path, emulator_url: str):
    app = create_app({"ENVIRONMENT": "development", "DATABASE_URL": f"sqlite:///{database}",
                      "STRIPE_API_BASE": emulator_url, "MAIL_SUPPRESS_SEND": "true"})
    with app.app_context():
        upgrade()
        seed_plans_from_config()
    return app


def signup(page: Page, base: str, email: str) -> None:
    page.goto(base + "/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page.get_by_test_id("current-plan")).to_be_visible()


def subscribe(page: Page, base: str, emulator_url: str, plan: str, name: str) -> None:
    page.goto(base + "/pricing")
    page.locator(f"[data-plan={plan}] form.choose-monthly button").click()
    expect(page).to_have_url(re.compile("^" + re.escape(emulator_url) + "/c/pay/"))
    page.fill("#card_number", "4242 4242 4242 4242")
    page.fill("#card_name", name)
    page.click("#submit")
    expect(page.get_by_test_id("success-plan")).to_be_visible()


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ssb-screenshots-") as tmp, EmulatorServer() as emulator:
        app = build_app(Path(tmp) / "app.db", emulator.url)
        base, server = serve(app)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for email, shots in (("ada@example.com", "pro"), ("grace@example.com", "starter")):
                    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                    page = context.new_page()
                    signup(page, base, email)
                    if shots == "pro":
                        subscribe(page, base, emulator.url, "pro", "Ada Lovelace")
                        page.screenshot(path=str(out_dir / "success.png"), full_page=True)
                        page.goto(base + "/billing")
                        expect(page.get_by_test_id("invoices")).to_be_visible()
                        page.screenshot(path=str(out_dir / "billing.png"), full_page=True)
                        page.get_by_role("link", name="Cancel plan").click()
                        expect(page.get_by_role("button", name="Cancel at period end")).to_be_visible()
                        page.screenshot(path=str(out_dir / "confirm-cancel.png"), full_page=True)
                    else:
                        subscribe(page, base, emulator.url, "starter", "Grace Hopper")
                        page.goto(base + "/pricing")
                        page.locator("[data-plan=pro] form.choose-monthly button").click()
                        expect(page.get_by_test_id("amount-due")).to_be_visible()
                        page.screenshot(path=str(out_dir / "confirm-change.png"), full_page=True)
                    context.close()
                context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                page = context.new_page()
                page.goto(base + "/pricing")
                page.locator("label[for=cycle-yearly]").click()
                page.locator("[data-plan=pro] a.choose-yearly").click()
                page.fill("input[name=email]", "linus@example.com")
                page.fill("input[name=password]", PASSWORD)
                page.fill("input[name=confirm]", PASSWORD)
                page.locator("main form button[type=submit]").click()
                expect(page.get_by_role("button", name="Continue to secure checkout")).to_be_visible()
                page.screenshot(path=str(out_dir / "review-plan.png"), full_page=True)
                context.close()
                browser.close()
        finally:
            server.shutdown()
    for name in ("success.png", "billing.png", "confirm-change.png", "confirm-cancel.png",
                 "review-plan.png"):
        print(f"✓ {out_dir / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
