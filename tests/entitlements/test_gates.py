"""Each gate, per plan, at and around each limit, through the real pages (CSRF included)."""

from datetime import UTC, date, datetime, timedelta

import pytest

from app.services.backtesting import data_range, years_before
from tests.conftest import csrf_token_from
from tests.entitlements.conftest import upgrade_page

LAST = date(2025, 12, 31)


def token(client, path="/strategies/"):
    return csrf_token_from(client.get(path).get_data(as_text=True))


def create(client, name="Golden cross", rules="fast=20 slow=50"):
    return client.post(
        "/strategies/new", data={"name": name, "description": "", "rules": rules, "csrf_token": token(client)}
    )


def backtest(client, strategy_id, start, end=LAST):
    return client.post(
        f"/strategies/{strategy_id}/backtests",
        data={"start_date": start.isoformat(), "end_date": end.isoformat(), "csrf_token": token(client)},
    )


def test_the_bundled_series_ends_where_the_tests_expect():
    assert data_range() == (date(2005, 1, 3), LAST)


def test_pages_need_a_login(seeded, client):
    for path in ("/strategies/", "/strategies/new", "/alerts/"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


# --- strategies_max ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan, limit, next_plan", [("free", 3, "starter"), ("starter", 25, "pro")])
def test_strategies_max_at_and_around_the_limit(member, plan, limit, next_plan):
    user = member(plan)
    user.strategies(limit - 1)
    assert user.client.get("/strategies/new").status_code == 200  # one below: the form
    response = create(user.client, name="The last one")
    assert response.status_code == 302  # the last slot is allowed
    page = upgrade_page(user.client.get("/strategies/new"))  # at the limit: the upgrade page
    assert page["feature"] == "strategies_max" and page["required_plan"] == next_plan
    assert f'href="/pricing#plan-{next_plan}"' in page["html"]
    assert "Strategies" in page["html"]
    upgrade_page(create(user.client, name="One too many"))
    assert f"{limit} of {limit} strategies" in user.client.get("/account").get_data(as_text=True)


def test_pro_has_no_strategy_limit(member):
    user = member("pro")
    user.strategies(40)
    assert create(user.client).status_code == 302
    assert "41 strategies · unlimited" in user.client.get("/account").get_data(as_text=True)


def test_a_strategy_with_rules_a_backtest_cannot_run_is_refused_on_the_form(member):
    user = member("free")
    response = create(user.client, rules="fast=50 slow=20")
    assert response.status_code == 400 and "fast &lt; slow" in response.get_data(as_text=True)


# --- backtests_per_month -----------------------------------------------------------------------------------


@pytest.mark.parametrize("plan, limit, next_plan", [("free", 20, "starter"), ("starter", 500, "pro")])
def test_backtests_per_month_at_and_around_the_limit(member, plan, limit, next_plan):
    user = member(plan)
    [sid] = user.strategies(1)
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=1)
    user.backtests(30, sid, when=last_month)  # last month's runs do not count
    user.backtests(limit - 1, sid)
    response = backtest(user.client, sid, years_before(LAST, 1))
    assert response.status_code == 302 and "/backtests/" in response.headers["Location"]  # the last one runs
    result = user.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Total return" in result and "Max drawdown" in result
    page = upgrade_page(backtest(user.client, sid, years_before(LAST, 1)))
    assert page["feature"] == "backtests_per_month" and page["required_plan"] == next_plan
    assert f"{limit} of {limit} backtests this month" in user.client.get("/account").get_data(as_text=True)


def test_pro_backtests_are_unlimited(member):
    user = member("pro")
    [sid] = user.strategies(1)
    user.backtests(600, sid)
    assert backtest(user.client, sid, years_before(LAST, 1)).status_code == 302


def test_deleting_a_strategy_does_not_give_back_this_months_backtests(member):
    user = member("free")
    [sid, other] = user.strategies(2)
    user.backtests(20, sid)
    client = user.client
    assert client.post(f"/strategies/{sid}/delete", data={"csrf_token": token(client)}).status_code == 302
    upgrade_page(backtest(client, other, years_before(LAST, 1)))


# --- history_years -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan, years, next_plan", [("free", 1, "starter"), ("starter", 5, "pro")])
def test_history_years_at_and_around_the_limit(member, plan, years, next_plan):
    user = member(plan)
    [sid] = user.strategies(1)
    earliest = years_before(LAST, years)
    assert backtest(user.client, sid, earliest).status_code == 302
    page = upgrade_page(backtest(user.client, sid, earliest - timedelta(days=1)))
    assert page["feature"] == "history_years" and page["required_plan"] == next_plan


def test_a_start_before_the_longest_history_is_a_field_error_naming_the_earliest_day(member):
    """Pro has the most history of any plan: a From date before it has nothing to sell, so the form says which
    day is the earliest instead of an upgrade page that can only say "No plan includes more"."""
    user = member("pro")
    [sid] = user.strategies(1)
    earliest = years_before(LAST, 20)
    assert backtest(user.client, sid, earliest).status_code == 302
    for start in (earliest - timedelta(days=1), date(2005, 1, 1)):
        response = backtest(user.client, sid, start)
        html = response.get_data(as_text=True)
        assert response.status_code == 400, html[:500]
        assert 'data-testid="upgrade-required"' not in html
        assert 'data-testid="start-date-error"' in html and "31 Dec 2005" in html.split("start-date-error")[1]
        assert f'value="{start.isoformat()}"' in html  # the form keeps what was sent


def test_a_start_before_the_data_still_offers_a_plan_that_goes_back_further(member):
    user = member("free")
    [sid] = user.strategies(1)
    page = upgrade_page(backtest(user.client, sid, date(2004, 6, 1)))  # before the data, and before Pro's 20 years
    assert page["feature"] == "history_years" and page["required_plan"] == "starter"


def test_the_backtest_form_offers_the_plans_history(member):
    user = member("starter")
    [sid] = user.strategies(1)
    html = user.client.get(f"/strategies/{sid}").get_data(as_text=True)
    assert f'min="{years_before(LAST, 5).isoformat()}"' in html


# --- email_alerts and realtime_alerts ----------------------------------------------------------------------


def alerts(client, **fields):
    data = {"csrf_token": token(client, "/account"), **{k: "y" for k, v in fields.items() if v}}
    return client.post("/alerts/", data=data)


def test_free_has_no_alerts(member):
    user = member("free")
    page = upgrade_page(user.client.get("/alerts/"))
    assert page["feature"] == "email_alerts" and page["required_plan"] == "starter"
    assert "Email alerts" in page["html"] and "Starter" in page["html"]
    upgrade_page(alerts(user.client, email_enabled=True))


def test_starter_has_email_alerts_but_not_realtime(member):
    user = member("starter")
    html = user.client.get("/alerts/").get_data(as_text=True)
    assert 'data-testid="realtime-upgrade"' in html and "disabled" in html
    assert alerts(user.client, email_enabled=True).status_code == 302
    assert "checked" in user.client.get("/alerts/").get_data(as_text=True)
    page = upgrade_page(alerts(user.client, email_enabled=True, realtime_enabled=True))
    assert page["feature"] == "realtime_alerts" and page["required_plan"] == "pro"


def test_pro_has_realtime_alerts(member, seeded):
    user = member("pro")
    assert 'data-testid="realtime-upgrade"' not in user.client.get("/alerts/").get_data(as_text=True)
    assert alerts(user.client, email_enabled=True, realtime_enabled=True).status_code == 302
    from app.extensions import db
    from app.models import AlertSettings

    with seeded.app_context():
        settings = db.session.get(AlertSettings, user.id)
        assert settings.email_enabled and settings.realtime_enabled


# --- downgrade ---------------------------------------------------------------------------------------------


def test_a_downgrade_keeps_everything_and_makes_the_excess_read_only(member):
    user = member("starter")
    ids = user.strategies(5)
    user.on_plan("starter", status="canceled")  # Stripe ended it: back to Free (3 strategies)
    client = user.client
    html = client.get("/strategies/").get_data(as_text=True)
    assert html.count('data-testid="strategy-row"') == 5  # nothing deleted
    assert html.count('data-editable="true"') == 3 and html.count('data-editable="false"') == 2
    assert 'data-testid="over-limit"' in html and "read-only" in html
    for sid in ids[:3]:  # the oldest three stay editable
        assert client.get(f"/strategies/{sid}/edit").status_code == 200
    for sid in ids[3:]:
        page = upgrade_page(client.get(f"/strategies/{sid}/edit"))
        assert page["feature"] == "strategies_max" and page["required_plan"] == "starter"
        upgrade_page(client.post(f"/strategies/{sid}/edit", data={"name": "x", "csrf_token": token(client)}))
        upgrade_page(backtest(client, sid, years_before(LAST, 1)))
        assert 'data-testid="read-only"' in client.get(f"/strategies/{sid}").get_data(as_text=True)
    assert "5 of 3 strategies" in client.get("/account").get_data(as_text=True)
    # deleting one of the editable ones moves the window: the oldest three are editable again
    assert client.post(f"/strategies/{ids[0]}/delete", data={"csrf_token": token(client)}).status_code == 302
    assert client.get(f"/strategies/{ids[3]}/edit").status_code == 200
    user.on_plan("starter")  # upgrading again: everything editable
    assert client.get(f"/strategies/{ids[4]}/edit").status_code == 200


# --- IDOR --------------------------------------------------------------------------------------------------


def test_another_users_strategies_and_backtests_are_not_found(member, seeded, client, auth):
    owner = member("pro", email="owner@example.com")
    [sid] = owner.strategies(1)
    response = backtest(client, sid, years_before(LAST, 1))
    bid = int(response.headers["Location"].rsplit("/", 1)[1])
    auth.logout()
    intruder = member("pro", email="intruder@example.com")
    c = intruder.client
    assert c.get(f"/strategies/{sid}").status_code == 404
    assert c.get(f"/strategies/{sid}/edit").status_code == 404
    assert c.post(f"/strategies/{sid}/edit", data={"name": "mine", "csrf_token": token(c)}).status_code == 404
    assert c.post(f"/strategies/{sid}/delete", data={"csrf_token": token(c)}).status_code == 404
    assert backtest(c, sid, years_before(LAST, 1)).status_code == 404
    assert c.get(f"/strategies/{sid}/backtests/{bid}").status_code == 404
    assert "Strategy 1" not in c.get("/strategies/").get_data(as_text=True)


# --- the account page --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategies, backtests, hints",
    [
        (1, 15, set()),  # 33%, 75%: no prompt
        (2, 16, {"backtests_per_month"}),  # 67%, 80%: backtests prompt
        (3, 20, {"strategies_max", "backtests_per_month"}),  # at both limits
    ],
)
def test_account_usage_and_upgrade_prompts_near_a_limit(member, strategies, backtests, hints):
    user = member("free")
    ids = user.strategies(strategies)
    user.backtests(backtests, ids[0])
    html = user.client.get("/account").get_data(as_text=True)
    assert f"{strategies} of 3 strategies" in html
    assert f"{backtests} of 20 backtests this month" in html
    shown = {key for key in ("strategies_max", "backtests_per_month") if f'data-testid="upgrade-hint-{key}"' in html}
    assert shown == hints
    if hints:
        assert 'href="/pricing#plan-starter"' in html


def test_nav_links_for_members(member):
    html = member("free").client.get("/account").get_data(as_text=True)
    assert 'href="/strategies/"' in html and 'href="/alerts/"' in html
