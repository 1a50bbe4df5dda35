"""The evaluation on the newest bar, its signals recorded once, and the mail each plan gets for them."""

from __future__ import annotations

import re
from datetime import date

from app.services.alerts import evaluate_watched, send_digests
from app.services.backtesting import newest_bar_on
from tests.alerts.conftest import (
    BUY_DAY,
    QUIET_DAY,
    SELL_DAY,
    outbox_kinds,
    parts,
    received,
    signals,
    watch,
)

EMAIL = "trader@example.com"


def evaluate(app, on: date):
    with app.app_context():
        return evaluate_watched(on)


def digest(app) -> int:
    with app.app_context():
        return send_digests()


def test_the_newest_bar_on_or_before_the_day_is_evaluated():
    assert newest_bar_on(BUY_DAY) == BUY_DAY
    assert newest_bar_on(date(2025, 12, 20)) == date(2025, 12, 19)  # a Saturday: Friday's bar
    assert newest_bar_on(date(2026, 12, 2)) == date(2025, 12, 31)  # past the series: its last bar
    assert newest_bar_on(date(2004, 12, 31)) is None


def test_a_crossing_on_the_bar_is_recorded_as_a_signal(on_plan):
    user = on_plan("starter")
    strategy = watch(user.app, user.id)
    quiet = evaluate(user.app, QUIET_DAY)
    assert (quiet.bar, quiet.evaluated, quiet.signals) == (QUIET_DAY, 1, 0)
    assert signals(user.app) == []

    found = evaluate(user.app, BUY_DAY)
    assert (found.evaluated, found.signals, found.digest) == (1, 1, 1)
    assert signals(user.app) == [(strategy, BUY_DAY, "buy", "digest", False)]


def test_a_second_run_records_and_mails_nothing_more(on_plan, smtp_sink):
    user = on_plan("pro", realtime=True)
    watch(user.app, user.id)
    assert evaluate(user.app, BUY_DAY).signals == 1
    again = evaluate(user.app, BUY_DAY)
    assert (again.evaluated, again.signals) == (1, 0)
    assert len(signals(user.app)) == 1
    assert outbox_kinds(user.app) == [("alert_signal", "sent")]
    assert len(received(smtp_sink, EMAIL)) == 1


def test_pro_gets_one_mail_per_signal_as_soon_as_the_job_sees_it(on_plan, smtp_sink):
    user = on_plan("pro", realtime=True)
    watch(user.app, user.id, "Momentum")
    watch(user.app, user.id, "Momentum copy")
    assert evaluate(user.app, BUY_DAY).realtime == 2
    mails = received(smtp_sink, EMAIL)  # delivered by the run itself: no digest, no request
    assert sorted(m["Subject"] for m in mails) == [
        "Buy signal: Momentum copy on 17 Dec 2025",
        "Buy signal: Momentum on 17 Dec 2025",
    ]
    body = parts(mails[0])
    assert "buy SSB at" in body["text/plain"] and "the 5-day average closed above the 20-day one" in body["text/plain"]
    assert "Smart Strategies <span" in body["text/html"] and "/alerts/" in body["text/html"]
    assert all(mailed for *_, mailed in signals(user.app))
    assert digest(user.app) == 0  # nothing left for a digest


def test_starter_gets_one_daily_digest_of_the_signals(on_plan, smtp_sink):
    user = on_plan("starter")
    watch(user.app, user.id)
    evaluate(user.app, BUY_DAY)
    evaluate(user.app, SELL_DAY)
    assert received(smtp_sink, EMAIL) == []  # no mail per signal on Starter
    assert digest(user.app) == 1
    assert digest(user.app) == 0  # a second run sends nothing twice
    (mail,) = received(smtp_sink, EMAIL)
    assert mail["Subject"] == "Your alerts digest: 2 strategy signals"
    text = parts(mail)["text/plain"]
    assert re.search(r"Momentum: buy SSB at [\d.]+ on 17 Dec 2025", text)
    assert re.search(r"Momentum: sell SSB at [\d.]+ on 18 Dec 2025", text)
    assert [row[3:] for row in signals(user.app)] == [("digest", True), ("digest", True)]


def test_free_gets_nothing(on_plan, smtp_sink):
    user = on_plan("free")
    watch(user.app, user.id)  # watched while on a paid plan, say
    run = evaluate(user.app, BUY_DAY)
    assert (run.evaluated, run.signals) == (0, 0)
    assert digest(user.app) == 0
    assert signals(user.app) == [] and outbox_kinds(user.app) == [] and received(smtp_sink, EMAIL) == []


def test_with_email_off_signals_are_listed_and_never_mailed(on_plan, smtp_sink):
    user = on_plan("pro", email_enabled=False, realtime=True)
    watch(user.app, user.id)
    assert evaluate(user.app, BUY_DAY).listed == 1
    assert digest(user.app) == 0
    assert [row[3:] for row in signals(user.app)] == [("none", False)]
    assert received(smtp_sink, EMAIL) == []


def test_a_downgrade_to_free_drops_the_pending_digest(on_plan, smtp_sink):
    user = on_plan("starter")
    watch(user.app, user.id)
    evaluate(user.app, BUY_DAY)
    user.on_plan("free")
    assert digest(user.app) == 0
    assert [row[3:] for row in signals(user.app)] == [("none", False)]
    assert received(smtp_sink, EMAIL) == []


def test_a_strategy_a_downgrade_left_read_only_is_not_evaluated(on_plan):
    user = on_plan("pro", realtime=True)
    ids = [watch(user.app, user.id, f"Strategy {i + 1}") for i in range(26)]  # Starter keeps the oldest 25
    user.on_plan("starter")
    assert evaluate(user.app, BUY_DAY).evaluated == 25
    assert ids[-1] not in {strategy for strategy, *_ in signals(user.app)}


def test_a_downgrade_from_pro_to_starter_stops_the_mail_per_signal(on_plan, smtp_sink):
    user = on_plan("pro", realtime=True)
    watch(user.app, user.id)
    evaluate(user.app, BUY_DAY)
    assert len(received(smtp_sink, EMAIL)) == 1
    user.on_plan("starter")
    run = evaluate(user.app, SELL_DAY)
    assert (run.realtime, run.digest) == (0, 1)
    assert len(received(smtp_sink, EMAIL)) == 1  # no mail for the sell at once
    assert digest(user.app) == 1
    assert [m["Subject"] for m in received(smtp_sink, EMAIL)][-1] == "Your alerts digest: 1 strategy signal"

    page = user.client.get("/alerts/").get_data(as_text=True)
    switch = re.search(r'<input[^>]*id="realtime_enabled"[^>]*>', page).group(0)
    assert "disabled" in switch and "checked" not in switch
    why = re.search(r'data-testid="realtime-stopped">([^<]*)<', page).group(1)
    assert "stopped when your plan became Starter, which does not include them" in why and "daily digest" in why
    assert 'data-delivery="digest"' in page
