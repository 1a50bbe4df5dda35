"""Billing fixtures: a logged-in user, tokens, and paying through the emulator's control API."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import User, UserSubscription
from tests.conftest import csrf_token_from


class Billing:
    """Drives the billing pages like a browser would, and the emulator like Stripe's hosted pages would."""

    def __init__(self, app, client, auth, emulator):
        self.app, self.client, self.auth, self.emulator = app, client, auth, emulator

    def token(self, path="/pricing") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def checkout(self, plan="pro", cycle="monthly"):
        return self.client.post("/billing/checkout", data={"plan": plan, "cycle": cycle, "csrf_token": self.token()})

    def subscribe(self, plan="pro", cycle="monthly", card="4242424242424242"):
        """Checkout → pay on the emulator → success page; returns the success page response."""
        response = self.checkout(plan, cycle)
        assert response.status_code == 303, response.get_data(as_text=True)
        session_id = urlsplit(response.headers["Location"]).path.rsplit("/", 1)[-1]
        session = self.emulator.complete_checkout(session_id, card=card)
        # Stripe's redirect fills the placeholder in; the session object keeps the template.
        success = urlsplit(session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id))
        return self.client.get(f"{success.path}?{success.query}")

    def post(self, path, **data):
        return self.client.post(path, data={**data, "csrf_token": self.token("/billing")})

    def user(self, email="trader@example.com") -> User:
        with self.app.app_context():
            return db.session.scalar(sa.select(User).where(User.email == email))

    def subscriptions(self, email="trader@example.com") -> list[UserSubscription]:
        with self.app.app_context():
            user = db.session.scalar(sa.select(User).where(User.email == email))
            rows = db.session.scalars(sa.select(UserSubscription).where(UserSubscription.user_id == user.id)).all()
            for row in rows:
                _ = row.plan  # load before the context closes
            return rows

    def stripe_subscriptions(self, customer_id):
        client = self.emulator.client()
        return list(client.v1.subscriptions.list(params={"customer": customer_id, "status": "all"}).auto_paging_iter())


@pytest.fixture
def billing(seeded, client, auth, stripe_emulator):
    auth.signup()
    return Billing(seeded, client, auth, stripe_emulator)


def session_id_from(location: str) -> str:
    return urlsplit(location).path.rsplit("/", 1)[-1]


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
