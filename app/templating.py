"""Jinja filters for money and dates, so templates never format numbers by hand."""
from __future__ import annotations

import datetime as dt
from datetime import datetime, timezone
from decimal import Decimal

from flask import Flask


def money(value: Decimal | int | str | None, cents: bool = False, whole: bool = False) -> str:
    """`Decimal('19.99')` -> `$19.99`; with cents=True, `1999` -> `$19.99`; whole=True rounds to dollars
    (`$10,250`, for chart axes); a negative amount reads `-$5.00`."""
    if value is None:
        return "—"
    amount = Decimal(value) / 100 if cents else Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.{0 if whole else 2}f}"


def date(value: datetime | dt.date | None) -> str:
    """`28 Dec 2026` in UTC (a calendar date, having no time zone, prints as it is)."""
    if value is None:
        return "—"
    if not isinstance(value, datetime):
        return value.strftime("%-d %b %Y")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%-d %b %Y")


def register(app: Flask) -> None:
    app.add_template_filter(money, "money")
    app.add_template_filter(date, "date")
