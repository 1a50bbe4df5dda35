"""The engine's day-by-day run: the same numbers the stored summary holds, plus trades and curves to draw."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from app.services.backtesting import (
    STARTING_EQUITY,
    Rules,
    data_range,
    default_start,
    equity_chart,
    line_chart,
    no_trade_note,
    run_crossover,
    simulate,
    warmup_note,
    years_before,
)

FIRST, LAST = data_range()


@pytest.mark.parametrize(
    "fast, slow, start", [(20, 50, date(2023, 1, 3)), (5, 20, date(2015, 6, 1)), (50, 200, date(2010, 1, 4))]
)
def test_the_trades_and_curve_add_up_to_the_stored_summary(fast, slow, start):
    sim = simulate(Rules(fast, slow), start, LAST)
    result = run_crossover(Rules(fast, slow), start, LAST)
    assert sim.result() == result
    assert sim.entries == result["trades"] > 0
    assert [t.side for t in sim.trades] == ["buy", "sell"] * (len(sim.trades) // 2) + ["buy"] * (len(sim.trades) % 2)
    assert len(sim.equity) == len(sim.days) == result["trading_days"]
    assert sim.equity[-1].quantize(Decimal("0.01")) == Decimal(result["final_equity"])
    assert sim.buy_and_hold[0] == STARTING_EQUITY
    # The equity only moves on the days held: compounding the round trips gives the final equity.
    compounded = STARTING_EQUITY
    for buy, sell in zip(sim.trades[::2], sim.trades[1::2], strict=False):
        compounded *= sell.price / buy.price
    if sim.open_trade:
        compounded *= sim.open_trade.price / sim.trades[-1].price
    assert abs(compounded - sim.equity[-1]) < Decimal("0.000001")
    assert min(sim.drawdowns) == sim.max_drawdown
    assert sim.drawdown_peak <= sim.drawdown_trough


def test_a_range_without_a_crossover_says_why():
    short = simulate(Rules(50, 200), date(2025, 6, 2), LAST)
    assert short.trades == () and "needs 200 trading days" in no_trade_note(short)
    year = simulate(Rules(50, 200), years_before(LAST, 1), LAST)
    assert year.trades == () and "never closed above" in no_trade_note(year)
    assert no_trade_note(simulate(Rules(20, 50), date(2023, 1, 3), LAST)) is None


def test_the_default_range_leaves_the_slow_average_a_year_to_trade():
    for slow in (50, 200, 250):
        start = default_start(Rules(10, slow), FIRST)
        assert len(simulate(Rules(10, slow), start, LAST).days) >= slow - 1 + 252
    one_year = years_before(LAST, 1)
    assert default_start(Rules(50, 200), one_year) == one_year  # never past the plan's history
    assert warmup_note(Rules(50, 200), one_year) and warmup_note(Rules(20, 50), one_year) is None
    assert "no backtest of these rules can trade" in warmup_note(Rules(10, 250), date(2025, 6, 2))


def test_the_chart_spans_its_box_with_both_series():
    sim = simulate(Rules(20, 50), date(2015, 1, 2), LAST)
    chart = equity_chart(sim)
    assert [s.key for s in chart.series] == ["strategy", "hold"]
    for s in chart.series:
        points = [tuple(map(float, p.split(","))) for p in s.points.split()]
        assert len(points) <= 400 and points[0][0] == 0 and points[-1][0] == chart.width
        assert all(0 <= y <= chart.height for _, y in points)
    assert chart.y_labels[0] > chart.y_labels[1] > chart.y_labels[2]
    assert chart.x_labels == (sim.days[0], sim.days[len(sim.days) // 2], sim.days[-1])
    flat = line_chart((date(2025, 1, 2), date(2025, 1, 3)), [("x", "X", (Decimal(0), Decimal(0)))])
    assert flat.y_labels[0] > flat.y_labels[2]  # a flat line still gets a scale
