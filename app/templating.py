"""Jinja filters for money and dates, so templates never format numbers by hand."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from flask import Flask


def money(value: Decimal | int | None, cents: bool = False) -> str:
    """`Decimal('19.99')` -> `$19.99`; with cents=True, `1999` -> `$19.99`."""
    if value is None:
        return "—"
    amount = Decimal(value) / 100 if cents else Decimal(value)
    return f"${amount:,.2f}"


def date(value: datetime | None) -> str:
    """`28 Dec 2026` in UTC."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%-d %b %Y")


def register(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(date, "date")
