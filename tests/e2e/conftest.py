"""Browser fixtures: Chromium (Debian's, see tests/conftest.py) against the live app and the emulator over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from app.extensions import db
from app.models import AuditLog, User, UserSubscription

PASSWORD = "correct horse battery"


@dataclass
class Site:
    """The live app, the emulator and a browser page, with the few steps every journey shares."""

    page: Page
    app: object
    url: str
    emulator: object

    def signup(self, email: str) -> None:
        """Create an account through the real /signup form, then log in (sign-up logs nobody in)."""
        self.page.goto(self.url + "/signup")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", PASSWORD)
        self.page.fill("input[name=confirm]", PASSWORD)
        self.page.locator("main form button[type=submit]").click()
        expect(
            self.page.get_by_role("alert").filter(has_text=f"Check your email: we sent a message to {email}.")
        ).to_be_visible()
        self.login(email)
        expect(self.page.get_by_test_id("current-plan")).to_have_text("Free")

    def login(self, email: str, password: str = PASSWORD) -> None:
        """Log in through the real /login form (where sign-up leaves a new customer)."""
        if not self.page.url.startswith(self.url + "/login"):
            self.page.goto(self.url + "/login")
        self.page.fill("input[name=email]", email)
        self.page.fill("input[name=password]", password)
        self.page.locator("main form button[type=submit]").click()

    def choose(self, plan: str, cycle: str = "monthly") -> None:
        """Pricing page → the plan's button for the cycle (the switch shows monthly by default)."""
        self.page.goto(self.url + "/pricing")
        if cycle == "yearly":
            self.page.locator("label[for=cycle-yearly]").click()
        self.page.locator(f"[data-plan={plan}] form.choose-{cycle} button").click()

    def pay(self, card: str = "4242 4242 4242 4242") -> None:
        """On the emulator's hosted Checkout page: type the card and subscribe."""
        expect(self.page).to_have_url(re.compile("^" + re.escape(self.emulator.url) + "/c/pay/cs_"))
        self.page.fill("#card_number", card)
        self.page.fill("#card_name", "Ada Lovelace")
        self.page.click("#submit")

    def user(self, email: str) -> User:
        with self.app.app_context():
            user = db.session.scalar(sa.select(User).where(User.email == email))
            db.session.expunge_all()
            return user

    def subscriptions(self, email: str) -> list[dict]:
        """The user's `user_subscriptions` rows as plain dicts (comparable before and after webhooks)."""
        with self.app.app_context():
            user = db.session.scalar(sa.select(User).where(User.email == email))
            rows = db.session.scalars(
                sa.select(UserSubscription).where(UserSubscription.user_id == user.id).order_by(UserSubscription.id)
            ).all()
            return [
                {
                    "id": r.id,
                    "stripe_subscription_id": r.stripe_subscription_id,
                    "plan": r.plan.name,
                    "billing_cycle": r.billing_cycle,
                    "status": r.status,
                    "price": r.stripe_price_id,
                    "current_period_start": r.current_period_start,
                    "current_period_end": r.current_period_end,
                    "cancel_at_period_end": r.cancel_at_period_end,
                }
                for r in rows
            ]

    def audit_actions(self) -> list[str]:
        with self.app.app_context():
            return list(db.session.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))

    def stripe_subscriptions(self, customer_id: str) -> list:
        return list(
            self.emulator.client()
            .v1.subscriptions.list(params={"customer": customer_id, "status": "all"})
            .auto_paging_iter()
        )


@pytest.fixture
def site(page, seeded, live_server, stripe_emulator) -> Site:
    page.set_default_timeout(10_000)
    return Site(page, seeded, live_server.url, stripe_emulator)
