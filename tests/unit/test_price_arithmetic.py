"""Prices: yearly savings, monthly equivalents, what a choice costs — in Decimal, never float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.models.plan import SubscriptionPlan
from app.services.subscriptions import monthly_equivalent


def plan(monthly: str, yearly: str | None) -> SubscriptionPlan:
    return SubscriptionPlan(
        name="p",
        display_name="P",
        price_monthly=Decimal(monthly),
        price_yearly=Decimal(yearly) if yearly is not None else None,
        stripe_price_id_monthly="price_m",
        stripe_price_id_yearly="price_y",
    )


@pytest.mark.parametrize(
    ("monthly", "yearly", "saving", "percent"),
    [
        ("19.99", "199.99", Decimal("39.89"), 17),
        ("49.99", "479.99", Decimal("119.89"), 20),
        ("0.00", None, None, None),
        ("10.00", "120.00", Decimal("0.00"), 0),
    ],
)
def test_yearly_saving(monthly, yearly, saving, percent):
    p = plan(monthly, yearly)
    assert p.yearly_saving == saving
    assert p.yearly_saving_percent == percent


@pytest.mark.parametrize(
    ("monthly", "yearly", "cycle", "expected"),
    [
        ("19.99", "199.99", "monthly", Decimal("19.99")),
        ("19.99", "199.99", "yearly", Decimal("199.99") / 12),
        ("49.99", "479.99", "yearly", Decimal("39.99916666666666666666666667")),
        ("0.00", None, "monthly", Decimal("0.00")),
    ],
)
def test_monthly_equivalent(monthly, yearly, cycle, expected):
    value = monthly_equivalent(plan(monthly, yearly), cycle)
    assert isinstance(value, Decimal) and value == expected


@pytest.mark.parametrize(
    ("cycle", "price", "price_id"), [("monthly", Decimal("19.99"), "price_m"), ("yearly", Decimal("199.99"), "price_y")]
)
def test_price_for_a_cycle(cycle, price, price_id):
    p = plan("19.99", "199.99")
    assert p.price_for(cycle) == price and p.stripe_price_id_for(cycle) == price_id
    assert p.is_free is False and plan("0", None).is_free is True
