"""The backtest engine: a moving-average crossover over the bundled daily price series.

Deterministic and free of the database: the same rules and dates always give the same result. Prices and
equity are Decimal (never float); the result stores decimals as strings so JSON keeps them exact.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from pathlib import Path

from app.services import DomainError
from app.templating import date as format_date

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


def newest_bar_on(day: date) -> date | None:
    """The newest bar of the series on or before `day` (None before its first): the bar an evaluation run on
    `day` looks at. The bundled series is static, so every day after its last bar evaluates that last bar."""
    prices = load_prices()
    index = bisect.bisect_right(prices, day, key=lambda price: price[0])
    return prices[index - 1][0] if index else None


@dataclass(frozen=True)
class Crossing:
    """A signal seen at a bar's close: `buy` when the fast average closed above the slow one there and not on the
    bar before, `sell` for the reverse."""

    day: date
    side: str
    close: Decimal


def crossing_on(rules: Rules, day: date) -> Crossing | None:
    """The rules' crossover on the bar of `day`, or None (no bar that day, no crossing, or fewer than slow + 1 bars
    before it to average). The averages run over the whole series up to the bar, as in a backtest from its start,
    whose trades after the first fall on exactly these days."""
    prices = load_prices()
    index = bisect.bisect_left(prices, day, key=lambda price: price[0])
    if index == len(prices) or prices[index][0] != day or index < rules.slow:
        return None
    closes = [close for _, close in prices[index - rules.slow : index + 1]]

    def above(end: int) -> bool:  # fast average > slow average at closes[end - 1]
        fast = sum(closes[end - rules.fast : end]) / rules.fast
        slow = sum(closes[end - rules.slow : end]) / rules.slow
        return fast > slow

    now, before = above(len(closes)), above(len(closes) - 1)
    if now == before:
        return None
    return Crossing(day, "buy" if now else "sell", prices[index][1])


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


TRADING_YEAR = 252  # trading days in a year, near enough
DEFAULT_RANGE_YEARS = 3


@dataclass(frozen=True)
class Trade:
    """One order: `buy` at a signal day's close, `sell` at a later one; a sell carries its round trip's return."""

    day: date
    side: str
    price: Decimal
    return_pct: str | None = None


@dataclass(frozen=True)
class Simulation:
    """A backtest day by day: what the stored result summarises, and what its page draws."""

    rules: Rules
    days: tuple[date, ...]
    closes: tuple[Decimal, ...]
    equity: tuple[Decimal, ...]  # unrounded, one per trading day
    trades: tuple[Trade, ...]
    days_invested: int
    max_drawdown: Decimal  # <= 0
    drawdown_peak: date  # the high the worst fall started from
    drawdown_trough: date

    @property
    def entries(self) -> int:
        return sum(1 for t in self.trades if t.side == "buy")

    @property
    def buy_and_hold(self) -> tuple[Decimal, ...]:
        """The starting equity put in on the first day and held to the last, for comparison."""
        return tuple(STARTING_EQUITY * close / self.closes[0] for close in self.closes)

    @property
    def drawdowns(self) -> tuple[Decimal, ...]:
        """Each day's fall from the highest equity so far (0 or negative)."""
        peak, out = self.equity[0], []
        for value in self.equity:
            peak = max(peak, value)
            out.append(value / peak - 1)
        return tuple(out)

    @property
    def open_trade(self) -> Trade | None:
        """The position still held on the range's last day, marked at its close (None when flat)."""
        if not self.trades or self.trades[-1].side != "buy":
            return None
        entry = self.trades[-1].price
        return Trade(self.days[-1], "held", self.closes[-1], pct(self.closes[-1] / entry - 1))

    @property
    def warmup_days(self) -> int:
        """Trading days the slow average needs before the first signal (all of them when the range is shorter)."""
        return min(self.rules.slow - 1, len(self.days))

    def result(self) -> dict:
        """The summary a Backtest row stores (decimals as strings)."""
        equity = self.equity[-1].quantize(CENT, ROUND_HALF_EVEN)
        return {
            "symbol": SYMBOL,
            "fast": self.rules.fast,
            "slow": self.rules.slow,
            "trading_days": len(self.closes),
            "days_invested": self.days_invested,
            "trades": self.entries,
            "starting_equity": str(STARTING_EQUITY),
            "final_equity": str(equity),
            "total_return_pct": pct(equity / STARTING_EQUITY - 1),
            "buy_and_hold_return_pct": pct(self.closes[-1] / self.closes[0] - 1),
            "max_drawdown_pct": pct(self.max_drawdown),
        }


def check_range(start: date, end: date) -> None:
    """Refuse a range the series cannot answer (BacktestError)."""
    first, last = data_range()
    if start >= end:
        raise BacktestError("The start date must be before the end date.")
    if start < first or end > last:
        raise BacktestError(f"The price data covers {format_date(first)} to {format_date(last)}.")


def simulate(rules: Rules, start: date, end: date) -> Simulation:
    """Backtest the crossover on [start, end]: long while fast SMA > slow SMA, flat otherwise.

    A signal seen at a day's close is traded at that close and takes effect from the next day's move (no
    look-ahead). The averages only use prices inside the range, so the first `slow - 1` days only warm them up.
    """
    check_range(start, end)
    series = [(day, close) for day, close in load_prices() if start <= day <= end]
    if len(series) < 2:
        raise BacktestError("The range needs at least two trading days.")
    days, closes = tuple(d for d, _ in series), tuple(c for _, c in series)
    equity = peak = STARTING_EQUITY
    curve: list[Decimal] = []
    trades: list[Trade] = []
    max_drawdown, peak_day, worst = Decimal(0), (days[0], days[0]), (days[0], days[0])
    fast_sum = slow_sum = Decimal(0)
    invested = False
    days_invested = 0
    for i, close in enumerate(closes):
        if i > 0 and invested:
            equity = equity * close / closes[i - 1]
            days_invested += 1
        curve.append(equity)
        if equity > peak:
            peak, peak_day = equity, (days[i], days[i])
        if equity / peak - 1 < max_drawdown:
            max_drawdown, worst = equity / peak - 1, (peak_day[0], days[i])
        fast_sum += close
        slow_sum += close
        if i >= rules.fast:
            fast_sum -= closes[i - rules.fast]
        if i >= rules.slow:
            slow_sum -= closes[i - rules.slow]
        if i + 1 >= rules.slow:
            want = fast_sum / rules.fast > slow_sum / rules.slow
            if want and not invested:
                trades.append(Trade(days[i], "buy", close))
            elif invested and not want:
                trades.append(Trade(days[i], "sell", close, pct(close / trades[-1].price - 1)))
            invested = want
    return Simulation(
        rules=rules,
        days=days,
        closes=closes,
        equity=tuple(curve),
        trades=tuple(trades),
        days_invested=days_invested,
        max_drawdown=max_drawdown,
        drawdown_peak=worst[0],
        drawdown_trough=worst[1],
    )


def run_crossover(rules: Rules, start: date, end: date) -> dict:
    """The stored summary of a backtest on [start, end] (see `simulate`)."""
    return simulate(rules, start, end).result()


def trading_days_between(start: date, end: date) -> int:
    """How many days of the series fall in [start, end]."""
    return sum(1 for day, _ in load_prices() if start <= day <= end)


def default_start(rules: Rules, earliest: date) -> date:
    """Where the backtest form starts: a few years back, and always long enough for the slow average to warm
    up and then trade for a year; never before `earliest` (the plan's history)."""
    days = [day for day, _ in load_prices()]
    back = max(rules.slow - 1 + TRADING_YEAR, 0)
    warm = days[max(len(days) - 1 - back, 0)]
    return max(earliest, min(years_before(days[-1], DEFAULT_RANGE_YEARS), warm))


@dataclass(frozen=True)
class ChartSeries:
    key: str  # the CSS hook: chart-line-<key>
    label: str
    points: str  # "x,y x,y …" in the chart's viewBox
    last: Decimal


@dataclass(frozen=True)
class LineChart:
    """A line chart drawn by the server as inline SVG (no script, so the CSP stays strict).

    The SVG stretches to its box (preserveAspectRatio="none", strokes that do not scale), so the labels live in
    HTML around it: `y_labels` top, middle and bottom, `x_labels` first, middle and last day.
    """

    width: int
    height: int
    series: tuple[ChartSeries, ...]
    y_labels: tuple[Decimal, Decimal, Decimal]
    x_labels: tuple[date, date, date]
    gridlines: tuple[float, ...]
    baseline: float | None  # the y of a reference value (the starting equity, or 0%), when in range


def _sampled(n: int, max_points: int) -> list[int]:
    """Indexes of at most `max_points` evenly spread days, first and last included."""
    if n <= max_points:
        return list(range(n))
    step = (n - 1) / (max_points - 1)
    return sorted({round(i * step) for i in range(max_points)})


def _nice_step(span: Decimal) -> Decimal:
    """The smallest round step (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k) at least `span`."""
    if span <= 0:
        return Decimal(1)
    power = Decimal(10) ** (span.adjusted())
    return next(
        Decimal(m) * power
        for m in ("1", "1.2", "1.5", "2", "2.5", "3", "4", "5", "6", "8", "10")
        if Decimal(m) * power >= span
    )


def _nice_bounds(low: Decimal, high: Decimal, top: Decimal | None) -> tuple[Decimal, Decimal]:
    """Bounds holding [low, high] whose top, middle and bottom are round numbers (the labelled lines);
    `top`, when given, is kept as the top (0% for a drawdown)."""
    if top is not None:
        step = _nice_step((top - low) / 2)
        return top - 2 * step, top
    step = _nice_step((high - low) / 2)
    while True:
        unit = Decimal(10) ** step.adjusted()  # the bottom is round to the step's leading digit
        bottom = (low / unit).to_integral_value(rounding="ROUND_FLOOR") * unit
        if bottom + 2 * step >= high:
            return bottom, bottom + 2 * step
        step = _nice_step(step * Decimal("1.01"))


def line_chart(
    days: tuple[date, ...],
    series: list[tuple[str, str, tuple[Decimal, ...]]],
    reference: Decimal | None = None,
    width: int = 600,
    height: int = 240,
    max_points: int = 400,
    top: Decimal | None = None,
) -> LineChart:
    """Scale the series (key, label, one value per day) into one chart on round bounds; `reference` (the
    starting equity, 0%) is kept in view and drawn dotted, `top` pins the top bound."""
    low = min(min(values) for _, _, values in series)
    high = max(max(values) for _, _, values in series)
    if reference is not None:
        low, high = min(low, reference), max(high, reference)
    low, high = _nice_bounds(low, high, top)
    picks = _sampled(len(days), max_points)

    def y_of(value: Decimal) -> float:
        return round(float((high - value) / (high - low)) * height, 2)

    drawn = tuple(
        ChartSeries(
            key,
            label,
            " ".join(f"{round(i * width / (len(days) - 1), 2)},{y_of(values[i])}" for i in picks),
            values[-1],
        )
        for key, label, values in series
    )
    return LineChart(
        width=width,
        height=height,
        series=drawn,
        y_labels=(high, (high + low) / 2, low),
        x_labels=(days[0], days[len(days) // 2], days[-1]),
        gridlines=(0.0, height / 4, height / 2, height * 3 / 4, float(height)),
        baseline=None if reference is None else y_of(reference),
    )


def equity_chart(sim: Simulation) -> LineChart:
    """The strategy's equity against buy-and-hold, with the starting equity marked."""
    return line_chart(
        sim.days,
        [
            ("strategy", f"Strategy (fast={sim.rules.fast} slow={sim.rules.slow})", sim.equity),
            ("hold", "Buy & hold", sim.buy_and_hold),
        ],
        reference=STARTING_EQUITY,
    )


def drawdown_chart(sim: Simulation) -> LineChart:
    """The strategy's fall from its high, in percent, day by day."""
    return line_chart(
        sim.days,
        [("drawdown", "Drawdown", tuple(d * 100 for d in sim.drawdowns))],
        reference=Decimal(0),
        height=120,
        top=Decimal(0),
    )


def no_trade_note(sim: Simulation) -> str | None:
    """Why a backtest made no trade, in words a user can act on (None when it traded)."""
    if sim.trades:
        return None
    n, slow, fast = len(sim.days), sim.rules.slow, sim.rules.fast
    if n < slow:
        return (
            f"No trade: the slow average needs {slow} trading days and this range has {n}, so no signal "
            f"could form. Pick a longer range or a shorter slow window."
        )
    signal_days = n - slow + 1
    return (
        f"No trade: the first {slow - 1} of the range's {n} trading days only warm up the slow average, and "
        f"in the {signal_days} days left the {fast}-day average never closed above the {slow}-day one. "
        f"A longer range or shorter windows give the crossover more chances."
    )


def warmup_note(rules: Rules, earliest: date) -> str | None:
    """A warning before running when the plan's history barely covers the slow average (None when ample)."""
    available = trading_days_between(earliest, data_range()[1])
    left = available - (rules.slow - 1)
    if left >= TRADING_YEAR // 2:
        return None
    if left <= 0:
        return (
            f"slow={rules.slow} needs {rules.slow} trading days before its first signal, more than the "
            f"{available} your history reaches: no backtest of these rules can trade."
        )
    return (
        f"slow={rules.slow} needs {rules.slow - 1} trading days to warm up, so even the longest range your "
        f"history allows ({available} trading days) leaves only {left} to trade in."
    )
