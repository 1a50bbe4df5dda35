"""The strategy pages as a user reads them: the backtest's chart, trades and notes, the delete confirmation, the
last result on the list, the templates on every plan (through the real pages, CSRF included)."""

from __future__ import annotations

import re
from datetime import date

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Backtest, Strategy
from app.services.backtesting import years_before
from tests.conftest import csrf_token_from

LAST = date(2025, 12, 31)


def token(client, path="/strategies/"):
    return csrf_token_from(client.get(path).get_data(as_text=True))


def run(client, sid, start, end=LAST):
    response = client.post(
        f"/strategies/{sid}/backtests",
        data={"start_date": start.isoformat(), "end_date": end.isoformat(), "csrf_token": token(client)},
    )
    assert response.status_code == 302 and "/backtests/" in response.headers["Location"], response.status_code
    return client.get(response.headers["Location"]).get_data(as_text=True)


def new_strategy(client, rules):
    response = client.post(
        "/strategies/new", data={"name": "Mine", "description": "", "rules": rules, "csrf_token": token(client)}
    )
    assert response.status_code == 302
    return int(re.search(r"/strategies/(\d+)", response.headers["Location"]).group(1))


def test_the_backtest_page_draws_both_curves_and_lists_the_trades(member):
    user = member("starter")
    [sid] = user.strategies(1)  # fast=10 slow=30
    html = run(user.client, sid, date(2023, 1, 3))
    assert 'data-testid="chart-equity"' in html and 'data-testid="chart-drawdown"' in html
    assert 'data-series="strategy"' in html and 'data-series="hold"' in html
    assert "Buy &amp; hold" in html and "$10,000.00" in html and "10000.00" not in html.replace("$10,000.00", "")
    rows = re.findall(r'data-testid="trade-row" data-side="(\w+)"', html)
    assert rows and rows[0] == "buy" and set(rows) <= {"buy", "sell", "held"}
    assert "3 Jan 2023 – 31 Dec 2025" in html
    assert 'data-testid="no-trade"' not in html
    assert re.search(r"Worst fall .*from the high of \d{1,2} \w{3} \d{4} to \d{1,2} \w{3} \d{4}", html)


def test_the_drawdown_chart_writes_negative_percentages_with_the_minus_sign(member):
    """As the headline and every amount do (`−13.56%`): the axis printed `-10%` and the chart's title `-13.56%`."""
    user = member("starter")
    [sid] = user.strategies(1)
    html = run(user.client, sid, date(2023, 1, 3))
    chart = html[html.index('data-testid="chart-drawdown"') :]
    chart = chart[: chart.index("</figure>")]
    labels = re.findall(r'class="chart-y-(?:top|mid|bottom)">([^<]*)<', chart)
    assert len(labels) == 3 and any(label.startswith("\u2212") for label in labels), labels
    assert not any("-" in label for label in labels), labels
    title = re.search(r"<title>([^<]*)</title>", chart).group(1)
    assert re.search(r"worst \u2212\d+(\.\d+)?%", title), title


def test_a_range_without_trades_says_why_instead_of_printing_zeros(member):
    user = member("free")
    sid = new_strategy(user.client, "fast=50 slow=200")
    show = user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    assert 'data-testid="warmup-note"' in show  # warned before running
    html = run(user.client, sid, years_before(LAST, 1))
    note = re.search(r'data-testid="no-trade">([^<]*)', html).group(1)
    assert "warm up the slow average" in note and "never closed above" in note
    assert 'data-testid="trade-row"' not in html


@pytest.mark.parametrize(
    "plan, start, label",
    [
        ("free", "2024-12-31", "Free plan: 1 year of history"),
        ("starter", "2022-12-31", "Starter plan: 5 years of history"),
    ],
)
def test_the_form_starts_long_enough_and_shows_the_plans_history(member, plan, start, label):
    user = member(plan)
    [sid] = user.strategies(1)
    html = user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    assert re.search(rf'id="start_date"[^>]*value="{start}"', html)
    history = re.search(r'data-testid="history-limit">(.*?)</p>', html, re.S).group(1)
    assert label in history and "31 Dec 2025" in history


def test_delete_asks_first_and_says_what_goes(member):
    user = member("free")
    [sid] = user.strategies(1)
    run(user.client, sid, date(2025, 1, 2))
    run(user.client, sid, date(2025, 3, 3))
    listing = user.client.get("/strategies/").get_data(as_text=True)
    assert f'href="/strategies/{sid}/delete"' in listing
    assert f'action="/strategies/{sid}/delete"' not in listing  # no one-click delete
    page = user.client.get(f"/strategies/{sid}/delete").get_data(as_text=True)
    assert "its 2 backtest results" in page and "2 of 20 used" in page and "cannot be undone" in page
    assert user.client.post(f"/strategies/{sid}/delete", data={"csrf_token": token(user.client)}).status_code == 302
    with user.app.app_context():
        assert db.session.get(Strategy, sid) is None
        assert db.session.scalar(sa.select(sa.func.count(Backtest.id))) == 2  # still counted this month


def test_someone_elses_delete_confirmation_is_not_found(member, client, auth):
    owner = member("free", email="owner@example.com")
    [sid] = owner.strategies(1)
    auth.logout()
    member("free", email="other@example.com")
    assert client.get(f"/strategies/{sid}/delete").status_code == 404


def test_the_list_shows_each_strategys_last_result(member):
    user = member("starter")
    first, second = user.strategies(2)
    run(user.client, first, date(2023, 1, 3))
    last = run(user.client, first, date(2024, 1, 2))
    ret = re.search(r'data-testid="metric"><span class="[^"]*">([^<]*)</span>', last).group(1)
    listing = user.client.get("/strategies/").get_data(as_text=True)
    rows = re.findall(r'data-testid="last-result">(.*?)</div>\s*<div class="d-flex gap-2">', listing, re.S)
    assert len(rows) == 2
    assert ret in rows[0] and "Last backtest" in rows[0]
    assert "Not backtested yet" in rows[1]


def test_a_run_reads_the_same_on_its_page_the_strategys_page_and_the_list(member):
    """A gain is "+83.38%" on the result page: the strategy's list of runs and the strategies list say the same."""
    user = member("starter")
    [sid] = user.strategies(1)
    user.backtests(1, strategy_id=sid)
    figures = {"total_return_pct": "83.38", "buy_and_hold_return_pct": "12.50", "max_drawdown_pct": "-20.67"}
    with user.app.app_context():
        backtest = db.session.scalar(sa.select(Backtest))
        backtest.result = {**figures, "trades": 4}
        db.session.commit()
        bid = backtest.id
    result = user.client.get(f"/strategies/{sid}/backtests/{bid}").get_data(as_text=True)
    shown = re.findall(r'data-testid="metric"><span class="[^"]*">([^<]*)</span>', result)
    assert shown == ["+83.38%", "+12.50%", "−20.67%"]
    runs = user.client.get(f"/strategies/{sid}").get_data(as_text=True).split('data-testid="backtests"')[1]
    assert [re.search(rf'data-label="{label}"[^>]*>([^<]*)<', runs).group(1) for label in LABELS] == shown
    listing = user.client.get("/strategies/").get_data(as_text=True)
    assert "+83.38%" in listing and "vs +12.50% hold" in listing


LABELS = ("Return", "Buy &amp; hold", "Max drawdown")


def test_a_stored_run_without_detail_still_opens(member):
    user = member("free")
    [sid] = user.strategies(1)
    user.backtests(1, strategy_id=sid)  # result {}
    with user.app.app_context():
        bid = db.session.scalar(sa.select(Backtest.id))
    response = user.client.get(f"/strategies/{sid}/backtests/{bid}")
    assert response.status_code == 200 and 'data-testid="no-detail"' in response.get_data(as_text=True)
    assert "Last backtest" in user.client.get("/strategies/").get_data(as_text=True)


@pytest.mark.parametrize("plan", ["free", "starter", "pro"])
def test_every_plan_can_start_from_a_template(member, plan):
    user = member(plan)
    form = user.client.get("/strategies/new").get_data(as_text=True)
    assert all(f'data-testid="template-{key}"' in form for key in ("swing", "momentum", "medium", "golden-cross"))
    html = user.client.get("/strategies/new?template=golden-cross").get_data(as_text=True)
    assert re.search(r'name="name"[^>]*value="Golden cross"', html) and "fast=50 slow=200</textarea>" in html
    response = user.client.post(
        "/strategies/new?template=golden-cross",
        data={"name": "Golden cross", "description": "", "rules": "fast=50 slow=200", "csrf_token": token(user.client)},
    )
    assert response.status_code == 302
    assert user.client.get("/strategies/new?template=nope").status_code == 200  # an unknown key: a blank form


@pytest.mark.parametrize(
    "plan, offer", [("free", "Starter goes back 5 years"), ("starter", "Pro goes back 20 years"), ("pro", None)]
)
def test_more_history_is_offered_only_where_a_plan_has_more(member, plan, offer):
    user = member(plan)
    [sid] = user.strategies(1)
    html = user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    history = re.search(r'data-testid="history-limit">(.*?)</p>', html, re.S).group(1)
    history = " ".join(re.sub(r"<[^>]+>", " ", history).split())
    assert (offer in history) if offer else ('data-testid="more-history"' not in html), history
