"""Card numbers are redacted as people write them (13 to 19 digits in a row, or 4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4 with
one kind of separator), and nothing else with a card's count of digits is: the `mail_written_to_folder` line's path,
whose file name starts with the time it was written (`20261204-213726`, an 8-6 grouping whose digits pass the Luhn
check one time in ten), says where the mail is — in production the only pointer to its verify and reset links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.logging import (
    CARD_LENGTH_ASCII_DIGITS,
    CARD_LENGTH_DIGITS,
    CARD_NUMBER,
    REDACTED,
    get_logger,
    holds_nothing_to_redact,
    luhn_valid,
    may_hold_secret,
    redact,
    redact_text,
)

#: A mail file's path as `mail_written_to_folder` logs it: its stem's digits (date-time) pass the Luhn check.
MAIL_PATH = "/home/dev/ssb/instance/mail/20261204-213726-000002-subscription_activated.eml"


@pytest.mark.parametrize(
    "number",
    [
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "4242424242424242",
        "3782 822463 10005",  # American Express, 4-6-5
        "3782-822463-10005",
        "378282246310005",
        "3056 930902 5904",  # Diners Club, 4-6-4
        "6011 1111 1111 1111 110",  # 19 digits, 4-4-4-4-3
        "6011111111111111110",
        "4222222222222",  # 13 digits in a row
    ],
)
def test_card_numbers_are_redacted_as_people_write_them(number):
    assert luhn_valid(number.replace(" ", "").replace("-", ""))
    for text in (number, f"card {number} declined", f"card={number}.", f"({number})"):
        event = redact(None, "info", {"event": "payment_failed", "note": text})
        assert number not in event["note"] and REDACTED in event["note"], text


def test_the_mail_files_path_survives_the_redaction():
    assert luhn_valid("20261204213726")  # why it was hidden: a card's count of digits that passes the Luhn check
    event = {"event": "mail_written_to_folder", "kind": "subscription_activated", "mail_id": 2, "path": MAIL_PATH}
    assert redact(None, "warning", dict(event)) == event
    assert redact_text(MAIL_PATH) == MAIL_PATH


def test_the_mail_line_as_written_keeps_its_path(log_json):
    get_logger("app.services.mail").warning("mail_written_to_folder", kind="subscription_activated", path=MAIL_PATH)
    (line,) = [r for r in log_json.records() if r["event"] == "mail_written_to_folder"]
    assert line["path"] == MAIL_PATH


def test_no_second_of_a_year_hides_a_mail_files_name():
    """Times a file is named by (every day of a year at one time, one second in 7 of a day) keep their names; about
    one in ten of them has digits that pass the Luhn check."""
    moments = [datetime(2026, 1, 1, 21, 37, 26, tzinfo=UTC) + timedelta(days=d) for d in range(365)]
    moments += [datetime(2026, 12, 4, tzinfo=UTC) + timedelta(seconds=s) for s in range(0, 86400, 7)]
    assert sum(luhn_valid(f"{moment:%Y%m%d%H%M%S}") for moment in moments) > 1000
    hidden = [
        name
        for name in (f"instance/mail/{moment:%Y%m%d-%H%M%S}-000002-verify_email.eml" for moment in moments)
        if redact_text(name) != name
    ]
    assert hidden == []


@pytest.mark.parametrize(
    "text",
    [
        "20261204-213726",  # 8-6: a date and a time
        "20261204 213726",
        "4242-4242 4242 4242",  # two kinds of separator
        "42424242-42424242",  # 8-8
        "424 2424 2424 2424 2",  # no card's grouping
        "4-2-4-2-4-2-4-2-4-2-4-2-4-2-4-2",
    ],
)
def test_digits_in_no_cards_grouping_are_kept(text):
    assert luhn_valid(text.replace(" ", "").replace("-", ""))
    assert redact(None, "info", {"event": "x", "note": f"at {text} ok"})["note"] == f"at {text} ok"


def test_a_card_is_found_next_to_digits_that_are_not_part_of_it():
    assert redact_text("ref 12 4242 4242 4242 4242") == f"ref 12 {REDACTED}"
    assert redact_text("4242 4242 4242 4242 4") == f"{REDACTED} 4"


#: Texts made of digits (ASCII and others), the separators and a few other characters, where cards are likeliest.
card_like_texts = st.text(alphabet=st.sampled_from("0123456789 -x_/\u0664\u0662"), min_size=0, max_size=40)


@settings(max_examples=1000, deadline=None)
@given(card_like_texts)
def test_the_prefilter_lets_through_every_text_card_number_matches(text):
    """`may_hold_secret` (and so `holds_nothing_to_redact`) may skip a text only when CARD_NUMBER cannot match it."""
    if CARD_NUMBER.search(text):
        assert CARD_LENGTH_DIGITS.search(text)
        if text.isascii():
            assert CARD_LENGTH_ASCII_DIGITS.search(text)
        assert may_hold_secret(text)
    if holds_nothing_to_redact({"event": "x", "note": text}):
        assert redact(None, "info", {"event": "x", "note": text}) == {"event": "x", "note": text}
