"""Alerts: watched strategies evaluated on the newest bar by a scheduled job, their signals mailed as the plan allows.

`evaluate_watched(on)` looks at every watched strategy on the newest bar of the bundled series on or before `on`
(today, UTC, for the scheduled job; the series is static, so past its last bar every run looks at that bar). A
crossover there is recorded once in `alert_signals`, unique on (strategy, bar date, side): a second run, or a second
worker running the same job, inserts nothing and so mails nothing. The insert that records a signal decides how it
reaches its owner, from the plan at that moment:

- `realtime_alerts` with both switches on: one mail for the signal, queued in the same transaction;
- `email_alerts` with email on: kept for the daily digest (`send_digests`), one mail listing the day's signals;
- otherwise the signal is only listed on the Alerts page.

Plans without `email_alerts` (Free) are not evaluated at all, and strategies a downgrade left read-only are not
either: a downgrade stops at the next run what the new plan lacks. The digest checks the plan again when it goes
out. Mail goes through the outbox (`queue_mail`) and is delivered by the task queue like every other mail.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from croniter import croniter
from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.logging import get_logger
from app.models import AlertSettings, AlertSignal, AlertWatch, Strategy, User, utcnow
from app.services.backtesting import SYMBOL, Crossing, Rules, crossing_on, newest_bar_on
from app.services.entitlements import Entitlements, get_entitlements, require_feature
from app.services.mail import queue_mail, request_delivery
from app.services.strategies import (
    StrategyError,
    alert_settings,
    editable_ids,
    ensure_editable,
    get_strategy,
    list_strategies,
    read_rules,
)
from app.urls import external_url

log = get_logger(__name__)

#: When the evaluation job runs (UTC): weekdays after the US close, which is 21:00 UTC in winter, 20:00 in summer.
EVALUATION_CRON = "15 22 * * 1-5"
#: EVALUATION_CRON in words, for the Alerts page.
EVALUATION_SCHEDULE = "on weekdays at 22:15 UTC, after the close"
#: When the daily digest goes out (UTC), after that day's evaluation.
DIGEST_CRON = "0 23 * * *"
#: How many of the latest signals the Alerts page lists.
RECENT_SIGNALS = 10


def delivery_for(entitlements: Entitlements, settings: AlertSettings) -> str:
    """How a signal seen now reaches the user: `realtime`, `digest` or `none` (see the module's docstring)."""
    if not (entitlements.allows("email_alerts") and settings.email_enabled):
        return "none"
    if entitlements.allows("realtime_alerts") and settings.realtime_enabled:
        return "realtime"
    return "digest"


# --- watching ------------------------------------------------------------------------------------------------


def watched_ids(user_id: int) -> set[int]:
    """Ids of the user's watched strategies."""
    return set(db.session.scalars(select(AlertWatch.strategy_id).where(AlertWatch.user_id == user_id)))


def watch_strategy(user_id: int, strategy_id: int) -> Strategy:
    """Watch one of the user's strategies (again: nothing changes). Needs `email_alerts`; a strategy a downgrade
    left read-only cannot be watched (UpgradeRequired), another user's is NotFound."""
    require_feature(user_id, "email_alerts")
    strategy = get_strategy(user_id, strategy_id)
    ensure_editable(user_id, strategy)
    values = {"strategy_id": strategy.id, "user_id": user_id, "created_at": utcnow()}
    db.session.execute(_dialect().insert(AlertWatch).values(**values).on_conflict_do_nothing())
    db.session.commit()
    return strategy


def unwatch_strategy(user_id: int, strategy_id: int) -> Strategy:
    """Stop watching the strategy (its past signals stay listed)."""
    strategy = get_strategy(user_id, strategy_id)
    watch = db.session.get(AlertWatch, strategy.id)
    if watch is not None:
        db.session.delete(watch)
    db.session.commit()
    return strategy


def _dialect():
    return postgresql if db.engine.dialect.name == "postgresql" else sqlite


# --- the evaluation ------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What one run did: the bar it looked at, how many strategies it evaluated, the signals it recorded."""

    on: date
    bar: date | None
    evaluated: int = 0
    realtime: int = 0
    digest: int = 0
    listed: int = 0

    def count(self, delivery: str) -> None:
        """One more new signal, delivered so."""
        if delivery == "realtime":
            self.realtime += 1
        elif delivery == "digest":
            self.digest += 1
        else:
            self.listed += 1

    @property
    def signals(self) -> int:
        return self.realtime + self.digest + self.listed

    def summary(self) -> str:
        """One line for the operator (`flask alerts run`) and the log."""
        if self.bar is None:
            return f"No bar on or before {self.on.isoformat()}: nothing evaluated."
        noun = "signal" if self.signals == 1 else "signals"
        return (
            f"Evaluated {self.evaluated} watched strateg{'y' if self.evaluated == 1 else 'ies'} on the bar of "
            f"{self.bar.isoformat()} (the newest on or before {self.on.isoformat()}): {self.signals} new {noun}, "
            f"{self.realtime} mailed at once, {self.digest} kept for the digest, {self.listed} listed only."
        )


def evaluate_watched(on: date | None = None) -> Evaluation:
    """Evaluate every watched strategy on the newest bar on or before `on` (today, UTC), recording each new signal
    once and queueing the real-time mails with it; their delivery is requested after the commit."""
    on = on or utcnow().date()
    evaluation = Evaluation(on=on, bar=newest_bar_on(on))
    if evaluation.bar is None:
        return evaluation
    rows = db.session.execute(
        select(AlertWatch.user_id, AlertWatch.strategy_id).order_by(AlertWatch.user_id, AlertWatch.strategy_id)
    ).all()
    by_user: dict[int, list[int]] = defaultdict(list)
    for user_id, strategy_id in rows:
        by_user[user_id].append(strategy_id)
    db.session.rollback()
    crossings: dict[Rules, Crossing | None] = {}  # strategies often share their rules (the templates)
    for user_id, strategy_ids in by_user.items():
        _evaluate_user(user_id, set(strategy_ids), evaluation, crossings)
        db.session.commit()
    if evaluation.realtime:
        request_delivery()
    log.info(
        "alerts_evaluated",
        bar=evaluation.bar.isoformat(),
        evaluated=evaluation.evaluated,
        realtime=evaluation.realtime,
        digest=evaluation.digest,
        listed=evaluation.listed,
    )
    return evaluation


def _evaluate_user(
    user_id: int, strategy_ids: set[int], evaluation: Evaluation, crossings: dict[Rules, Crossing | None]
) -> None:
    """One user's watched strategies, as their plan stands now (nothing at all without `email_alerts`)."""
    assert evaluation.bar is not None
    entitlements = get_entitlements(user_id)
    user = db.session.get(User, user_id)
    if user is None or not entitlements.allows("email_alerts"):
        return
    delivery = delivery_for(entitlements, alert_settings(user_id))
    strategies = list_strategies(user_id)
    editable = editable_ids(user_id, strategies)
    for strategy in strategies:
        if strategy.id not in strategy_ids or strategy.id not in editable:
            continue
        try:
            rules = read_rules(strategy.rules)
        except StrategyError:  # rules saved before they were read strictly: the strategy page asks for a fix
            continue
        evaluation.evaluated += 1
        if rules not in crossings:
            crossings[rules] = crossing_on(rules, evaluation.bar)
        crossing = crossings[rules]
        if crossing is not None and _record(user, strategy, rules, crossing, delivery):
            evaluation.count(delivery)


def _record(user: User, strategy: Strategy, rules: Rules, crossing: Crossing, delivery: str) -> bool:
    """Insert the signal unless it is there already; the insert that wrote it queues its real-time mail."""
    now = utcnow()
    signal_id = db.session.scalar(
        _dialect()
        .insert(AlertSignal)
        .values(
            strategy_id=strategy.id,
            user_id=user.id,
            bar_date=crossing.day,
            side=crossing.side,
            close=crossing.close,
            fast=rules.fast,
            slow=rules.slow,
            delivery=delivery,
            created_at=now,
            mailed_at=now if delivery == "realtime" else None,
        )
        .on_conflict_do_nothing()
        .returning(AlertSignal.id)
    )
    if signal_id is None:
        return False
    if delivery == "realtime":
        queue_mail(
            "alert_signal",
            f"alert_signal:{signal_id}",
            user,
            side=crossing.side.capitalize(),
            strategy=strategy.name,
            bar=crossing.day.strftime("%-d %b %Y"),
            signal=_signal_line(strategy.name, rules, crossing),
            alerts_url=external_url("alerts.edit_alerts"),
        )
    return True


def _signal_line(name: str, rules: Rules, crossing: Crossing) -> str:
    """“Swing trend: buy SSB at 153.47 on 31 Dec 2025 (the 20-day average closed above the 50-day one).”"""
    direction = "above" if crossing.side == "buy" else "below"
    return (
        f"{name}: {crossing.side} {SYMBOL} at {crossing.close:.2f} on {crossing.day.strftime('%-d %b %Y')} "
        f"(the {rules.fast}-day average closed {direction} the {rules.slow}-day one)."
    )


# --- the digest ----------------------------------------------------------------------------------------------

_PENDING_DIGEST = (AlertSignal.delivery == "digest", AlertSignal.mailed_at.is_(None))


def send_digests() -> int:
    """Queue one digest per user with signals kept for it; returns how many were queued.

    The user's pending signals are locked (skipping those another worker holds), so no signal goes into two
    digests; the outbox key names the first signal of the batch, so a re-run after a crash queues nothing twice.
    When the plan no longer includes email alerts, or email was turned off, the signals are only listed.
    """
    user_ids = list(db.session.scalars(select(AlertSignal.user_id).where(*_PENDING_DIGEST).distinct()))
    db.session.rollback()
    queued = 0
    for user_id in user_ids:
        rows = db.session.execute(
            select(AlertSignal, Strategy.name)
            .join(Strategy, Strategy.id == AlertSignal.strategy_id)
            .where(AlertSignal.user_id == user_id, *_PENDING_DIGEST)
            .order_by(AlertSignal.bar_date, AlertSignal.id)
            .with_for_update(of=AlertSignal, skip_locked=True)
        ).all()
        user = db.session.get(User, user_id)
        if rows and user is not None:
            queued += _digest(user, [(signal, name) for signal, name in rows])
        db.session.commit()
    if queued:
        request_delivery()
    log.info("alert_digests_queued", digests=queued)
    return queued


def _digest(user: User, signals: list[tuple[AlertSignal, str]]) -> int:
    """Queue the user's digest of these signals and mark them mailed (or only listed, when the plan stopped)."""
    if delivery_for(get_entitlements(user.id), alert_settings(user.id)) == "none":
        db.session.execute(
            update(AlertSignal).where(AlertSignal.id.in_([signal.id for signal, _ in signals])).values(delivery="none")
        )
        return 0
    count = len(signals)
    queue_mail(
        "alert_digest",
        f"alert_digest:{user.id}:{signals[0][0].id}",
        user,
        signals=f"{count} strategy signal{'s' if count != 1 else ''}",
        lines=[signal_line(name, signal) for signal, name in signals],
        alerts_url=external_url("alerts.edit_alerts"),
    )
    now = utcnow()
    for signal, _ in signals:
        signal.mailed_at = now
    return 1


def signal_line(name: str, signal: AlertSignal) -> str:
    """A recorded signal in words (the digest's lines)."""
    return _signal_line(
        name, Rules(fast=signal.fast, slow=signal.slow), Crossing(signal.bar_date, signal.side, signal.close)
    )


# --- the Alerts page -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchRow:
    """One of the user's strategies on the Alerts page."""

    strategy: Strategy
    watched: bool
    editable: bool  # False: a downgrade left it read-only, so it is not evaluated
    last_signal: AlertSignal | None


@dataclass(frozen=True)
class AlertsOverview:
    """What the Alerts page shows: the strategies and which are watched, the latest signals, the next runs."""

    rows: list[WatchRow]
    signals: list[tuple[AlertSignal, str]]  # (signal, strategy name), newest first
    delivery: str  # how a signal seen now would reach the user (delivery_for)
    next_evaluation: datetime
    next_bar: date | None  # the bar the next evaluation looks at
    next_digest: datetime
    realtime_stopped: bool  # real-time was switched on, and the plan no longer includes it

    @property
    def watched(self) -> list[WatchRow]:
        return [row for row in self.rows if row.watched]


def next_run(cron: str, now: datetime | None = None) -> datetime:
    """The next time (UTC) a schedule entry fires after `now`."""
    return croniter(cron, now or utcnow()).get_next(datetime)


def last_signals(user_id: int) -> dict[int, AlertSignal]:
    """Each of the user's strategies' latest signal, by strategy id (one query)."""
    newest = (
        select(AlertSignal.strategy_id, func.max(AlertSignal.bar_date).label("bar_date"))
        .where(AlertSignal.user_id == user_id)
        .group_by(AlertSignal.strategy_id)
        .subquery()
    )
    rows = db.session.scalars(
        select(AlertSignal)
        .join(
            newest,
            and_(AlertSignal.strategy_id == newest.c.strategy_id, AlertSignal.bar_date == newest.c.bar_date),
        )
        .order_by(AlertSignal.id)
    )
    return {signal.strategy_id: signal for signal in rows}


def alerts_overview(user_id: int, now: datetime | None = None) -> AlertsOverview:
    """The Alerts page's content for the user, as their plan stands now."""
    strategies = list_strategies(user_id)
    editable = editable_ids(user_id, strategies)
    watched = watched_ids(user_id)
    signals = db.session.execute(
        select(AlertSignal, Strategy.name)
        .join(Strategy, Strategy.id == AlertSignal.strategy_id)
        .where(AlertSignal.user_id == user_id)
        .order_by(AlertSignal.bar_date.desc(), AlertSignal.id.desc())
        .limit(RECENT_SIGNALS)
    ).all()
    last = last_signals(user_id)
    entitlements = get_entitlements(user_id)
    settings = alert_settings(user_id)
    evaluation = next_run(EVALUATION_CRON, now)
    return AlertsOverview(
        rows=[WatchRow(s, s.id in watched, s.id in editable, last.get(s.id)) for s in strategies],
        signals=[(signal, name) for signal, name in signals],
        delivery=delivery_for(entitlements, settings),
        next_evaluation=evaluation,
        next_bar=newest_bar_on(evaluation.date()),
        next_digest=next_run(DIGEST_CRON, now),
        realtime_stopped=settings.realtime_enabled and not entitlements.allows("realtime_alerts"),
    )
