"""The backtest engine: a moving-average crossover over the bundled daily price series.

Deterministic and free of the database: the same rules and dates always give the same result. Prices and
equity are Decimal (never float); the result stores decimals as strings so JSON keeps them exact.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path

from app.services import DomainError

PRICES_PATH = Path(__file__).resolve().parent.parent / "data" / "prices_ssb.csv"
SYMBOL = "SSB"
STARTING_EQUITY = Decimal("10000.00")
DEFAULT_FAST, DEFAULT_SLOW = 20, 50
MAX_WINDOW = 250
CENT = Decimal("0.01")


class BacktestError(DomainError):
    code = "invalid_backtest"


@dataclass(frozen=True)
class Rules:
    fast: int
    slow: int


@lru_cache(maxsize=1)
def load_prices() -> tuple[tuple[date, Decimal], ...]:
    """The bundled series (`scripts/generate_price_series.py` made it), read once per process."""
    with PRICES_PATH.open(newline="") as f:
        return tuple((date.fromisoformat(row["date"]), Decimal(row["close"])) for row in csv.DictReader(f))


def data_range() -> tuple[date, date]:
    """The first and last day the series has."""
    prices = load_prices()
    return prices[0][0], prices[-1][0]


def years_before(day: date, years: int) -> date:
    """The same calendar day `years` earlier (29 February → 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def history_years_needed(start: date) -> int:
    """How many years of history (counted back from the series' last day) a backtest from `start` reaches."""
    last = data_range()[1]
    years = last.year - start.year
    if (start.month, start.day) < (last.month, last.day):
        years += 1
    return max(years, 0)


def pct(value: Decimal) -> str:
    return str((value * 100).quantize(CENT, ROUND_HALF_EVEN))


def run_crossover(rules: Rules, start: date, end: date) -> dict:
    """Backtest the crossover on [start, end]: long while fast SMA > slow SMA, flat otherwise.

    A signal seen at a day's close takes effect from the next day's move (no look-ahead).
    """
    first, last = data_range()
    if start >= end:
        raise BacktestError("The start date must be before the end date.")
    if start < first or end > last:
        raise BacktestError(f"The price data covers {first.isoformat()} to {last.isoformat()}.")
    closes = [close for day, close in load_prices() if start <= day <= end]
    if len(closes) < 2:
        raise BacktestError("The range needs at least two trading days.")

    equity = peak = STARTING_EQUITY
    max_drawdown = Decimal(0)
    fast_sum = slow_sum = Decimal(0)
    invested = False
    trades = 0
    days_invested = 0
    for i, close in enumerate(closes):
        if i > 0 and invested:
            equity = equity * close / closes[i - 1]
            days_invested += 1
        peak = max(peak, equity)
        max_drawdown = min(max_drawdown, equity / peak - 1)
        fast_sum += close
        slow_sum += close
        if i >= rules.fast:
            fast_sum -= closes[i - rules.fast]
        if i >= rules.slow:
            slow_sum -= closes[i - rules.slow]
        if i + 1 >= rules.slow:
            want = fast_sum / rules.fast > slow_sum / rules.slow
            if want and not invested:
                trades += 1
            invested = want
    equity = equity.quantize(CENT, ROUND_HALF_EVEN)
    return {
        "symbol": SYMBOL,
        "fast": rules.fast,
        "slow": rules.slow,
        "trading_days": len(closes),
        "days_invested": days_invested,
        "trades": trades,
        "starting_equity": str(STARTING_EQUITY),
        "final_equity": str(equity),
        "total_return_pct": pct(equity / STARTING_EQUITY - 1),
        "buy_and_hold_return_pct": pct(closes[-1] / closes[0] - 1),
        "max_drawdown_pct": pct(max_drawdown),
    }
