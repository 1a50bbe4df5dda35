"""Stripe's test cards and what each one does in the emulator.

``behaviour`` values:
- ``ok``: every charge succeeds.
- ``decline``: the card is refused at once (Checkout shows the message, the session stays open).
- ``fail_later``: attaches and pays now, every later charge fails (4000 0000 0000 0341).
- ``3ds``: needs authentication; the emulator simulates a successful challenge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import StripeError, card_declined


@dataclass(frozen=True)
class TestCard:
    brand: str
    behaviour: str = "ok"
    decline_code: str | None = None
    message: str | None = None
    funding: str = "credit"


CARDS = {
    "4242424242424242": TestCard("visa"),
    "4000056655665556": TestCard("visa", funding="debit"),
    "5555555555554444": TestCard("mastercard"),
    "2223003122003222": TestCard("mastercard"),
    "378282246310005": TestCard("amex"),
    "6011111111111117": TestCard("discover"),
    "4000002500003155": TestCard("visa", behaviour="3ds"),
    "4000002760003184": TestCard("visa", behaviour="3ds"),
    "4000000000000341": TestCard("visa", behaviour="fail_later"),
    "4000000000000002": TestCard(
        "visa", behaviour="decline", decline_code="generic_decline", message="Your card was declined."
    ),
    "4000000000009995": TestCard(
        "visa", behaviour="decline", decline_code="insufficient_funds", message="Your card has insufficient funds."
    ),
    "4000000000009987": TestCard(
        "visa", behaviour="decline", decline_code="lost_card", message="Your card was declined."
    ),
    "4000000000000069": TestCard(
        "visa", behaviour="decline", decline_code="expired_card", message="Your card has expired."
    ),
    "4000000000000127": TestCard(
        "visa", behaviour="decline", decline_code="incorrect_cvc", message="Your card's security code is incorrect."
    ),
}


def normalise(number: str) -> str:
    return "".join(ch for ch in str(number or "") if ch.isdigit())


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number][::-1]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return len(number) >= 12 and total % 10 == 0


def lookup(number: str, param: str = "card") -> tuple[str, TestCard]:
    """Validate a card number; return (digits, TestCard) or raise a Stripe card error."""
    digits = normalise(number)
    if not digits:
        raise StripeError(
            "Your card number is incomplete.", status=402, type="card_error", code="incomplete_number", param=param
        )
    if not luhn_ok(digits):
        raise StripeError(
            "Your card number is incorrect.", status=402, type="card_error", code="incorrect_number", param=param
        )
    card = CARDS.get(digits)
    if card is None:
        raise card_declined(
            "Your card was declined. Your request was in test mode, but used a non test card. "
            "For a list of valid test cards, visit: https://stripe.com/docs/testing.",
            decline_code="test_mode_live_card",
            param=param,
        )
    return digits, card


def fingerprint(digits: str) -> str:
    return hashlib.sha256(("emu" + digits).encode()).hexdigest()[:16]
