"""The Alerts page (watched strategies, last signals, next evaluation), its watch buttons, and `flask alerts …`."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import AlertWatch
from app.services.alerts import DIGEST_CRON, EVALUATION_CRON, next_run
from app.tasks import JOBS, SCHEDULE
from tests.alerts.conftest import BUY_DAY, signals, watch
from tests.conftest import csrf_token_from
from tests.entitlements.conftest import upgrade_page
from tests.factories import UserFactory


def post(client, path: str):
    return client.post(path, data={"csrf_token": csrf_token_from(client.get("/account").get_data(as_text=True))})


def watched(app, user_id: int) -> set[int]:
    with app.app_context():
        return set(db.session.scalars(sa.select(AlertWatch.strategy_id).where(AlertWatch.user_id == user_id)))


def test_the_page_lists_watched_strategies_last_signals_and_the_next_evaluation(on_plan, runner):
    user = on_plan("starter")
    strategy = watch(user.app, user.id, "Momentum")
    user.strategies(1)  # not watched
    assert runner.invoke(args=["alerts", "run", "--date", BUY_DAY.isoformat()]).exit_code == 0
    user.app.config["TASK_QUEUE_URL"] = user.app.config["REDIS_URL"]  # as deployed: the queue's cron evaluates
    page = user.client.get("/alerts/").get_data(as_text=True)
    assert re.search(rf'data-strategy-id="{strategy}" data-watched="true"', page)
    assert page.count('data-watched="false"') == 1
    assert 'data-testid="watch-count">1 of 2 strategies' in page
    assert re.search(r'data-testid="signal" data-side="buy" data-delivery="digest"', page)
    assert "bar of 17 Dec 2025" in page and "in the next digest" in page
    expected = next_run(EVALUATION_CRON, datetime.now(UTC))
    assert f'data-testid="next-evaluation">{expected.strftime("%a %-d %b, %H:%M")} UTC<' in page
    assert "on the bar of 31 Dec 2025" in page
    assert 'data-delivery="digest"' in page  # Starter, email on


def test_without_a_task_queue_the_page_promises_no_evaluation_time(on_plan):
    """`make run` has no task queue, so no scheduler: the page says when alerts are evaluated then (never)."""
    user = on_plan("starter")
    watch(user.app, user.id, "Momentum")
    assert not user.app.config.get("TASK_QUEUE_URL")
    page = user.client.get("/alerts/").get_data(as_text=True)
    assert 'data-testid="next-evaluation">When <code>flask alerts run</code> is run<' in page
    assert "nothing evaluates alerts on a schedule" in page
    assert "Evaluated each time <code>flask alerts run</code> is run" in page
    assert "A daily digest at" not in page and "A digest each time flask alerts digest is run" in page
    expected = next_run(EVALUATION_CRON, datetime.now(UTC))
    assert expected.strftime("%a %-d %b, %H:%M") not in page


def test_watching_and_unwatching_from_the_page(on_plan):
    user = on_plan("starter")
    (strategy,) = user.strategies(1)
    response = post(user.client, f"/alerts/strategies/{strategy}/watch")
    assert response.status_code == 302 and response.location.endswith("/alerts/#watched")
    assert post(user.client, f"/alerts/strategies/{strategy}/watch").status_code == 302  # again: no error
    assert watched(user.app, user.id) == {strategy}
    assert "Watching “Strategy 1”" in user.client.get("/alerts/").get_data(as_text=True)
    post(user.client, f"/alerts/strategies/{strategy}/unwatch")
    assert watched(user.app, user.id) == set()


def test_watching_is_gated_like_the_page(on_plan, seeded):
    user = on_plan("free")
    (strategy,) = user.strategies(1)
    page = upgrade_page(post(user.client, f"/alerts/strategies/{strategy}/watch"))
    assert page["feature"] == "email_alerts" and page["required_plan"] == "starter"
    with seeded.app_context():
        other = UserFactory(email="other@example.com")
        theirs = watch(seeded, other.id)
    user.on_plan("starter")
    assert post(user.client, f"/alerts/strategies/{theirs}/watch").status_code == 404
    assert post(user.client, f"/alerts/strategies/{theirs}/unwatch").status_code == 404
    assert watched(seeded, user.id) == set()


def test_a_read_only_strategy_cannot_be_watched(on_plan):
    user = on_plan("pro")
    ids = user.strategies(26)
    user.on_plan("starter")
    page = upgrade_page(post(user.client, f"/alerts/strategies/{ids[-1]}/watch"))
    assert page["feature"] == "strategies_max"
    assert post(user.client, f"/alerts/strategies/{ids[0]}/watch").status_code == 302


def test_flask_alerts_run_evaluates_now(on_plan, runner, smtp_sink):
    user = on_plan("pro", realtime=True)
    watch(user.app, user.id)
    result = runner.invoke(args=["alerts", "run", "--date", "2025-12-20"])  # a Saturday: Friday's bar
    assert result.exit_code == 0, result.output
    assert "on the bar of 2025-12-19 (the newest on or before 2025-12-20): 0 new signals" in result.output
    result = runner.invoke(args=["alerts", "run", "--date", BUY_DAY.isoformat()])
    assert "Evaluated 1 watched strategy on the bar of 2025-12-17" in result.output
    assert "1 new signal, 1 mailed at once" in result.output
    assert len(signals(user.app)) == 1 and len(smtp_sink.messages) == 1
    assert "0 new signals" in runner.invoke(args=["alerts", "run", "--date", BUY_DAY.isoformat()]).output
    bad = runner.invoke(args=["alerts", "run", "--date", "17/12/2025"])
    assert bad.exit_code == 2 and "Invalid value for '--date'" in bad.output
    assert runner.invoke(args=["alerts", "digest"]).output.strip() == "0 digest(s) added to the mail outbox."


def test_the_scheduled_jobs_are_in_the_cron_schedule(app, runner):
    crons = {entry.job.__name__: entry.cron for entry in SCHEDULE}
    assert crons["evaluate_alerts"] == EVALUATION_CRON and crons["send_alert_digests"] == DIGEST_CRON
    assert "evaluate_alerts" in JOBS
    with app.app_context():  # as `flask` pushes it for every command
        result = runner.invoke(args=["queue", "run", "evaluate_alerts"])
    assert result.output == "evaluate_alerts: 0 new signal(s)\n", result.exception
