"""The app's Checkout does not let customers enter promotion codes: the plans have no discounts, and with
`allow_promotion_codes` any active code of the Stripe account would discount a subscription whose pages and mails
quote list prices. Read from the session the emulator holds, as Stripe would hold it."""

from __future__ import annotations

from app.extensions import db
from app.services.checkout import start_checkout
from tests.factories import UserFactory


def test_checkout_session_is_created_without_promotion_codes(seeded, stripe_emulator):
    with seeded.test_request_context():
        user_id = UserFactory(email="promo@example.com").id
        checkout = start_checkout(user_id, "pro", "monthly")
        db.session.remove()
    session = stripe_emulator.client().v1.checkout.sessions.retrieve(checkout.session_id)
    assert session.allow_promotion_codes is None  # Stripe's default: the promotion code field is not shown
    assert session.mode == "subscription" and session.amount_total == 4999  # the list price, nothing off
    assert session.client_reference_id == str(user_id)
