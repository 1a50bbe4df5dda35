"""Regenerate `app/data/prices_ssb.csv`: a synthetic daily price series the backtests run on.

Deterministic (a seeded random walk with drift and a few regimes), so the committed file and every backtest
result are reproducible: `python scripts/generate_price_series.py` rewrites the very same bytes.
"""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "app" / "data" / "prices_ssb.csv"
FIRST, LAST = date(2005, 1, 3), date(2025, 12, 31)
CENT = Decimal("0.01")


def business_days(first: date, last: date):
    day = first
    while day <= last:
        if day.weekday() < 5:
            yield day
        day += timedelta(days=1)


def main() -> None:
    rng = random.Random(20051231)
    price = Decimal("100.00")
    rows = []
    for i, day in enumerate(business_days(FIRST, LAST)):
        regime = (i // 500) % 4  # ~2-year regimes: bull, chop, bear, bull
        drift = {0: 6, 1: 0, 2: -4, 3: 5}[regime]  # basis points per 10 days, roughly
        step_bp = rng.randint(-150, 150) + drift  # daily move in basis points
        price = max(
            Decimal("1.00"), (price * (Decimal(10000 + step_bp) / Decimal(10000))).quantize(CENT, ROUND_HALF_EVEN)
        )
        rows.append((day.isoformat(), f"{price}"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("date", "close"))
        writer.writerows(rows)
    print(f"✓ wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
