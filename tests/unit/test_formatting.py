"""The money and date filters every template uses: one way to write an amount and a moment everywhere."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from app.services.backtesting import BacktestError, check_range, data_range
from app.templating import date, datetime_utc, money, percent


@pytest.mark.parametrize(
    ("value", "kwargs", "shown"),
    [
        (Decimal("19.99"), {}, "$19.99"),
        (-4999, {"cents": True}, "\u2212$49.99"),
        (Decimal("-5"), {"currency": "eur"}, "\u2212€5.00"),
        (-125000, {"cents": True, "currency": "chf"}, "\u2212CHF 1,250.00"),
        (Decimal("10250.4"), {"whole": True}, "$10,250"),
        (None, {}, "—"),
    ],
)
def test_money_puts_the_minus_sign_before_the_currency(value, kwargs, shown):
    assert money(value, **kwargs) == shown


def test_a_moment_is_the_date_with_its_utc_time():
    paris = dt.timezone(dt.timedelta(hours=1))
    moment = dt.datetime(2026, 12, 1, 0, 30, tzinfo=paris)
    assert date(moment) == "30 Nov 2026"
    assert datetime_utc(moment) == "30 Nov 2026, 23:30 UTC"
    assert datetime_utc(dt.datetime(2026, 12, 1, 9, 5)) == "1 Dec 2026, 09:05 UTC"  # naive means UTC
    assert datetime_utc(None) == "—"


def test_a_range_outside_the_data_names_its_dates_as_every_page_does():
    first, last = data_range()
    with pytest.raises(BacktestError) as refused:
        check_range(first - dt.timedelta(days=30), last)
    assert refused.value.message == f"The price data covers {date(first)} to {date(last)}."
    assert first.isoformat() not in refused.value.message


@pytest.mark.parametrize(
    ("value", "signed", "shown"),
    [
        (-13.56, False, "\u221213.56%"),
        ("4.2", True, "+4.2%"),
        (0, True, "0%"),
        (12.5, False, "12.5%"),
        (None, False, "—"),
    ],
)
def test_a_percentage_has_the_minus_sign_and_on_request_a_plus(value, signed, shown):
    assert percent(value, signed=signed) == shown
