"""A strategy's rules: read exactly as typed or refused with a message quoting them, never replaced by a default.

The syntax (app/services/strategies.py): empty means fast=20 slow=50; otherwise `fast` and `slow` once each, either
order, any case, `=` or `:`, separated by spaces, new lines, commas or semicolons, 1 ≤ fast < slow ≤ 250.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.models import Backtest, Strategy
from app.services.backtesting import MAX_WINDOW, Rules
from app.services.strategies import RULES_PATTERN, StrategyError, read_rules
from tests.entitlements.test_api import bearer
from tests.entitlements.test_gates import LAST, backtest, create, token


@pytest.mark.parametrize(
    "text, fast, slow",
    [
        ("", 20, 50),
        ("   ", 20, 50),
        ("fast=20 slow=50", 20, 50),
        ("FAST=20 SLOW=50", 20, 50),
        ("slow: 200, fast: 50", 50, 200),
        ("fast = 5 ; slow = 10", 5, 10),
        ("slow=50\nfast=20\n", 20, 50),
        ("fast=1 slow=250", 1, MAX_WINDOW),
        ("fast=020 slow=050", 20, 50),
    ],
)
def test_rules_in_the_documented_syntax_are_read(text, fast, slow):
    assert read_rules(text) == Rules(fast=fast, slow=slow)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "garbage",
            "Could not read “garbage” in the rules: write them as fast=<days> slow=<days>, e.g. fast=20 slow=50.",
        ),
        ("fast=5", "The rules “fast=5” do not set slow: give both windows, e.g. fast=20 slow=50."),
        ("slow=80", "The rules “slow=80” do not set fast: give both windows, e.g. fast=20 slow=50."),
        ("fast=abc slow=10", "“fast=abc”: fast must be a whole number of trading days from 1 to 250."),
        ("fast=-5 slow=10", "“fast=-5”: fast must be a whole number of trading days from 1 to 250."),
        ("fast=2.5 slow=10", "“fast=2.5”: fast must be a whole number of trading days from 1 to 250."),
        ("fast=20 slow=99999999", "“slow=99999999”: slow must be a whole number of trading days from 1 to 250."),
        ("fast=50 slow=20", "The rules need 1 ≤ fast < slow ≤ 250 (got fast=50, slow=20)."),
        ("fast=0 slow=10", "The rules need 1 ≤ fast < slow ≤ 250 (got fast=0, slow=10)."),
        ("fast=20 slow=251", "The rules need 1 ≤ fast < slow ≤ 250 (got fast=20, slow=251)."),
        ("fast=5 fast=10 slow=50", "The rules set fast twice (“fast=5” and “fast=10”): keep one."),
        ("speed=3 fast=2 slow=4", "The rules cannot set “speed”: only fast and slow, e.g. fast=20 slow=50."),
        ("fast 20 slow 50", "“fast” needs = and a number of trading days, e.g. fast=20."),
        (",", "The rules “,” do not set fast: give both windows, e.g. fast=20 slow=50."),
        (
            "fast=20 slow=50 please",
            "Could not read “please” in the rules: write them as fast=<days> slow=<days>, e.g. fast=20 slow=50.",
        ),
        (
            "buy when sma(20) > sma(50)",
            "Could not read “buy” in the rules: write them as fast=<days> slow=<days>, e.g. fast=20 slow=50.",
        ),
        (
            "x" * 5000,
            "Could not read “" + "x" * 39 + "…” in the rules: write them as fast=<days> slow=<days>, "
            "e.g. fast=20 slow=50.",
        ),
    ],
)
def test_rules_that_cannot_be_read_are_refused_with_what_was_typed(text, message):
    with pytest.raises(StrategyError) as refused:
        read_rules(text)
    assert refused.value.code == "invalid_rules" and refused.value.status == 400
    assert refused.value.message == message


PIECES = [
    "fast",
    "slow",
    "FAST",
    "Slow",
    "speed",
    "=",
    ":",
    " ",
    " ",
    ",",
    ";",
    "\n",
    "\t",
    "0",
    "1",
    "5",
    "20",
    "50",
    "250",
    "251",
    "-",
    "abc",
    ".",
    "=",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12).map("".join))
def test_the_openapi_pattern_says_what_the_service_reads(text):
    """The pattern in the API document accepts what read_rules accepts, and refuses the rest but fast ≥ slow."""
    matches = re.search(RULES_PATTERN, text.strip()) is not None
    try:
        read_rules(text)
    except StrategyError as exc:
        assert not matches or exc.message.startswith("The rules need 1 ≤ fast < slow"), (text, exc.message)
    else:
        assert matches, text


def test_the_form_shows_the_rules_error_with_the_input_and_saves_nothing(member):
    user = member("free")
    for rules, shown in (
        ("garbage", "Could not read “garbage” in the rules"),
        ("fast=5", "The rules “fast=5” do not set slow"),
        ("fast=abc slow=10", "“fast=abc”: fast must be a whole number"),
        ("fast=-5 slow=10", "“fast=-5”: fast must be a whole number"),
    ):
        response = create(user.client, rules=rules)
        html = response.get_data(as_text=True)
        assert response.status_code == 400
        assert re.search(r'<textarea[^>]*class="[^"]*is-invalid', html), rules  # the field is marked
        assert f'<div class="invalid-feedback">{shown}' in html
        assert re.search(rf">\s*{re.escape(rules)}</textarea>", html), rules  # what was typed stays in the field
    # Both fields' problems in one answer.
    html = create(user.client, name="", rules="garbage").get_data(as_text=True)
    assert "This field is required." in html and "Could not read “garbage”" in html
    with user.app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Strategy.id))) == 0


def test_the_form_keeps_accepting_valid_rules_as_typed(member):
    user = member("pro")
    for rules in ("fast=20 slow=50", "", "slow: 200, fast: 50", "FAST=5\nSLOW=10"):
        assert create(user.client, name=f"S {rules!r}", rules=rules).status_code == 302, rules
    with user.app.app_context():
        assert list(db.session.scalars(sa.select(Strategy.rules).order_by(Strategy.id))) == [
            "fast=20 slow=50",
            "",
            "slow: 200, fast: 50",
            "FAST=5\nSLOW=10",
        ]


def test_editing_refuses_unreadable_rules_and_keeps_the_old_ones(member):
    user = member("free")
    [sid] = user.strategies(1)
    response = user.client.post(
        f"/strategies/{sid}/edit",
        data={"name": "Renamed", "description": "", "rules": "fast=abc slow=10", "csrf_token": token(user.client)},
    )
    assert response.status_code == 400 and "“fast=abc”" in response.get_data(as_text=True)
    with user.app.app_context():
        assert db.session.get(Strategy, sid).rules == "fast=10 slow=30"


def test_a_saved_strategy_whose_rules_do_not_read_is_not_backtested_with_defaults(member):
    user = member("free")
    with user.app.app_context():  # saved before the rules were read strictly
        strategy = Strategy(user_id=user.id, name="Old", rules="garbage")
        db.session.add(strategy)
        db.session.commit()
        sid = strategy.id
    page = user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    assert 'data-testid="rules-problem"' in page and "Could not read “garbage”" in page
    response = backtest(user.client, sid, LAST.replace(month=1, day=2))
    assert response.status_code == 302 and response.headers["Location"] == f"/strategies/{sid}"
    assert "Could not read “garbage” in the rules" in user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    with user.app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Backtest.id))) == 0  # nothing ran, nothing counted


def test_a_backtest_runs_the_windows_the_rules_give(member):
    user = member("free")
    assert create(user.client, rules="slow: 30, fast: 10").status_code == 302
    with user.app.app_context():
        sid = db.session.scalar(sa.select(Strategy.id))
    response = backtest(user.client, sid, LAST.replace(month=1, day=2))
    assert response.status_code == 302
    html = user.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "fast=10 slow=30" in html


def test_the_api_refuses_unreadable_rules_with_invalid_rules(member):
    user = member("pro")
    headers = bearer(user.client)
    for rules, message in (
        ("garbage", "Could not read “garbage” in the rules"),
        ("fast=5", "The rules “fast=5” do not set slow"),
        ("fast=-5 slow=10", "“fast=-5”: fast must be a whole number"),
        ("fast=9 slow=3", "(got fast=9, slow=3)"),
    ):
        response = user.client.post("/api/v1/strategies", headers=headers, json={"name": "x", "rules": rules})
        assert response.status_code == 400
        body = response.get_json()
        assert body["error"] == "invalid_rules" and message in body["message"], body
    created = user.client.post(
        "/api/v1/strategies", headers=headers, json={"name": "x", "rules": "slow: 200, fast: 50"}
    )
    assert created.status_code == 201 and created.get_json()["rules"] == "slow: 200, fast: 50"
