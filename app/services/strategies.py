"""Strategies, backtests and alert settings: the product the plans gate.

Every function takes the acting user's id and only ever touches that user's rows: someone else's strategy is
"not found" (404), never "forbidden", so ids cannot be probed. Limits are checked here, under a lock on the
user's row, so two concurrent requests cannot both take the last slot; the view decorators only answer early.

A downgrade never deletes anything: past a new `strategies_max`, the oldest strategies (up to the limit) stay
editable and the rest become read-only until the user upgrades or deletes some.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import BindParameter, Select, func, select

from app.extensions import db
from app.models import AlertSettings, Backtest, Strategy, User
from app.services import DomainError
from app.services.backtesting import (
    DEFAULT_FAST,
    DEFAULT_SLOW,
    MAX_WINDOW,
    BacktestError,
    Rules,
    Simulation,
    data_range,
    history_years_needed,
    run_crossover,
    simulate,
    years_before,
)
from app.services.entitlements import (
    Entitlements,
    UpgradeRequired,
    cheapest_plan_with,
    count_phrase,
    feature_label,
    get_entitlements,
    plan_display_name,
    require_feature,
    require_within_limit,
)
from app.templating import date as format_date

NAME_MAX = 120
TEXT_MAX = 5000


class StrategyError(DomainError):
    code = "invalid_strategy"


class NotFound(DomainError):
    code = "not_found"
    status = 404

    def __init__(self):
        super().__init__("We could not find that page.")


def month_start(now: datetime | None = None) -> datetime:
    """The first instant of the current calendar month, UTC (when `backtests_per_month` resets)."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def strategies_count_query(user_id: int | BindParameter[int]) -> Select:
    """The count `count_strategies` reads (usage of `strategies_max`), for a statement that reads more."""
    return select(func.count(Strategy.id)).where(Strategy.user_id == user_id)


def backtests_since_query(user_id: int | BindParameter[int], since: datetime | BindParameter[datetime]) -> Select:
    """The count `count_backtests_this_month` reads (usage of `backtests_per_month`) from `month_start()`."""
    return select(func.count(Backtest.id)).where(Backtest.user_id == user_id, Backtest.created_at >= since)


def count_strategies(user_id: int) -> int:
    """How many strategies the user has (usage of `strategies_max`)."""
    return db.session.scalar(strategies_count_query(user_id)) or 0


def count_backtests_this_month(user_id: int) -> int:
    """Backtests run since the first of this month, UTC (usage of `backtests_per_month`)."""
    return db.session.scalar(backtests_since_query(user_id, month_start())) or 0


def _lock_user(user_id: int) -> None:
    """Serialize a user's limit checks: count and insert happen while holding their row."""
    db.session.execute(select(User.id).where(User.id == user_id).with_for_update())


def list_strategies(user_id: int) -> list[Strategy]:
    """The user's strategies, oldest first (the order in which they stay editable after a downgrade)."""
    return list(
        db.session.scalars(
            select(Strategy).where(Strategy.user_id == user_id).order_by(Strategy.created_at, Strategy.id)
        )
    )


def editable_ids(user_id: int, strategies: list[Strategy] | None = None) -> set[int]:
    """Ids of the strategies the user may change: all of them, or the oldest `strategies_max` when over it."""
    strategies = list_strategies(user_id) if strategies is None else strategies
    limit = get_entitlements(user_id).limit("strategies_max")
    return {s.id for s in (strategies if limit is None else strategies[:limit])}


def get_strategy(user_id: int, strategy_id: int) -> Strategy:
    """The user's strategy, or NotFound (also for another user's)."""
    strategy = db.session.get(Strategy, strategy_id)
    if strategy is None or strategy.user_id != user_id:
        raise NotFound()
    return strategy


def ensure_editable(user_id: int, strategy: Strategy) -> None:
    """Raise UpgradeRequired when a downgrade left this strategy past the limit (read-only)."""
    if strategy.id not in editable_ids(user_id):
        entitlements = get_entitlements(user_id)
        limit = entitlements.limit("strategies_max") or 0
        usage = count_strategies(user_id)
        raise UpgradeRequired(
            "strategies_max",
            entitlements.plan,
            cheapest_plan_with("strategies_max", at_least=usage),
            limit=limit,
            usage=usage,
            message=f"“{strategy.name}” is read-only: the {plan_display_name(entitlements.plan)} plan includes "
            f"{count_phrase('strategies_max', limit)} and you have {usage}. Upgrade, or delete some "
            f"strategies, to edit or backtest it again.",
        )


# --- the rules' syntax ----------------------------------------------------------------------------------------
# Empty rules mean fast=20 slow=50. Otherwise exactly two settings, `fast` and `slow`, each once, in either order:
# a name (any case), `=` or `:` (spaces allowed around it), a whole number of trading days in ASCII digits;
# settings are separated by spaces, new lines, commas or semicolons; 1 ≤ fast < slow ≤ 250. Anything else is
# refused with a message quoting what was typed: a rule we cannot read is never replaced by a default.
RULES_SEPARATORS = re.compile(r"[\s,;]+")
RULES_SETTING = re.compile(r"(?P<name>[^\s,;=:]*)(?:\s*[=:]\s*(?P<days>[^\s,;]*))?")
RULES_EXAMPLE = f"fast={DEFAULT_FAST} slow={DEFAULT_SLOW}"


def _rules_pattern() -> str:
    """The syntax above as one regular expression (for the OpenAPI document); only `fast < slow` is left out."""
    days = r"0*(?:[1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|250)"  # 1 to MAX_WINDOW (250)
    fast, slow = rf"[Ff][Aa][Ss][Tt]\s*[=:]\s*{days}", rf"[Ss][Ll][Oo][Ww]\s*[=:]\s*{days}"
    return rf"^(?:\s*|[\s,;]*(?:{fast}[\s,;]+{slow}|{slow}[\s,;]+{fast})[\s,;]*)$"


RULES_PATTERN = _rules_pattern()


def _quote(text: str, limit: int = 40) -> str:
    """“text” for a message, shortened when a paste is long."""
    return f"“{text if len(text) <= limit else text[: limit - 1] + '…'}”"


def read_rules(text: str | None) -> Rules:
    """The crossover windows the rules give (syntax above); raises StrategyError `invalid_rules` otherwise."""
    text = (text or "").strip()
    if not text:
        return Rules(fast=DEFAULT_FAST, slow=DEFAULT_SLOW)
    given: dict[str, tuple[str, str]] = {}  # name -> (the setting as typed, its days as typed)
    position = 0
    while True:
        separator = RULES_SEPARATORS.match(text, position)
        position = separator.end() if separator else position
        if position == len(text):
            break
        match = RULES_SETTING.match(text, position)
        assert match is not None  # the pattern matches the empty string, and text[position] is not a separator
        setting, name, days = match.group(0), match.group("name").lower(), match.group("days")
        position = match.end()
        if days is None and name in ("fast", "slow"):
            raise StrategyError(
                f"{_quote(setting)} needs = and a number of trading days, e.g. "
                f"{name}={DEFAULT_FAST if name == 'fast' else DEFAULT_SLOW}.",
                code="invalid_rules",
            )
        if days is None or not name:
            raise StrategyError(
                f"Could not read {_quote(setting)} in the rules: write them as fast=<days> "
                f"slow=<days>, e.g. {RULES_EXAMPLE}.",
                code="invalid_rules",
            )
        if name not in ("fast", "slow"):
            raise StrategyError(
                f"The rules cannot set {_quote(match.group('name'))}: only fast and slow, e.g. {RULES_EXAMPLE}.",
                code="invalid_rules",
            )
        if not (days.isascii() and days.isdigit()) or len(days.lstrip("0")) > len(str(MAX_WINDOW)):
            raise StrategyError(
                f"{_quote(setting)}: {name} must be a whole number of trading days from 1 to {MAX_WINDOW}.",
                code="invalid_rules",
            )
        if name in given:
            raise StrategyError(
                f"The rules set {name} twice ({_quote(given[name][0])} and {_quote(setting)}): keep one.",
                code="invalid_rules",
            )
        given[name] = (setting, days)
    missing = [name for name in ("fast", "slow") if name not in given]
    if missing:
        raise StrategyError(
            f"The rules {_quote(text)} do not set {missing[0]}: give both windows, e.g. {RULES_EXAMPLE}.",
            code="invalid_rules",
        )
    fast, slow = int(given["fast"][1]), int(given["slow"][1])
    if not 1 <= fast < slow <= MAX_WINDOW:
        raise StrategyError(
            f"The rules need 1 ≤ fast < slow ≤ {MAX_WINDOW} (got fast={given['fast'][1]}, slow={given['slow'][1]}).",
            code="invalid_rules",
        )
    return Rules(fast=fast, slow=slow)


def rules_problem(text: str | None) -> str | None:
    """Why the rules cannot be read (read_rules' message), or None when they can."""
    try:
        read_rules(text)
    except StrategyError as exc:
        return exc.message
    return None


def _clean(name: str | None, description: str | None, rules: str | None) -> tuple[str, str, str]:
    name = (name or "").strip()
    if not name:
        raise StrategyError("Give the strategy a name.", code="missing_name")
    if len(name) > NAME_MAX:
        raise StrategyError(f"The name must be at most {NAME_MAX} characters.", code="invalid_name")
    description, rules = (description or "").strip(), (rules or "").strip()
    if len(description) > TEXT_MAX or len(rules) > TEXT_MAX:
        raise StrategyError(f"Description and rules must be at most {TEXT_MAX} characters each.", code="too_long")
    read_rules(rules)  # rules a backtest cannot run are refused now, not at the first run
    return name, description, rules


def create_strategy(user_id: int, name: str, description: str = "", rules: str = "") -> Strategy:
    """Create a strategy within `strategies_max`; raises StrategyError or UpgradeRequired."""
    name, description, rules = _clean(name, description, rules)
    _lock_user(user_id)
    require_within_limit(user_id, "strategies_max", count_strategies(user_id))
    strategy = Strategy(user_id=user_id, name=name, description=description, rules=rules)
    db.session.add(strategy)
    db.session.commit()
    return strategy


def update_strategy(user_id: int, strategy_id: int, name: str, description: str, rules: str) -> Strategy:
    """Change a strategy the user may still edit (read-only ones past a downgraded limit raise UpgradeRequired)."""
    strategy = get_strategy(user_id, strategy_id)
    ensure_editable(user_id, strategy)
    strategy.name, strategy.description, strategy.rules = _clean(name, description, rules)
    db.session.commit()
    return strategy


def delete_strategy(user_id: int, strategy_id: int) -> None:
    """Delete a strategy (read-only ones too: that is how a user gets back under a limit).

    Its backtests stay, detached, so they keep counting against this month's allowance.
    """
    strategy = get_strategy(user_id, strategy_id)
    db.session.delete(strategy)
    db.session.commit()


def latest_backtests(user_id: int) -> dict[int, Backtest]:
    """Each of the user's strategies' most recent backtest, by strategy id (one query for the whole list)."""
    newest = (
        select(func.max(Backtest.id))
        .where(Backtest.user_id == user_id, Backtest.strategy_id.is_not(None))
        .group_by(Backtest.strategy_id)
    )
    rows = db.session.scalars(select(Backtest).where(Backtest.id.in_(newest)))
    return {b.strategy_id: b for b in rows if b.strategy_id is not None}


def replay(backtest: Backtest) -> Simulation | None:
    """The backtest day by day (trades, equity curve), recomputed from what it stored: the engine is
    deterministic, so the windows and dates it ran with give back the same run. None when the stored result is
    incomplete or the series no longer covers its dates."""
    result = backtest.result or {}
    try:
        rules = Rules(fast=int(result["fast"]), slow=int(result["slow"]))
        return simulate(rules, backtest.start_date, backtest.end_date)
    except (KeyError, TypeError, ValueError, BacktestError):
        return None


@dataclass(frozen=True)
class StrategyTemplate:
    """A ready-made strategy the form can start from (every plan has them)."""

    key: str
    name: str
    description: str
    rules: str


STRATEGY_TEMPLATES: tuple[StrategyTemplate, ...] = (
    StrategyTemplate(
        "swing", "Swing trend", "Rides moves of a few weeks: the 20-day average against the 50-day.", "fast=20 slow=50"
    ),
    StrategyTemplate(
        "momentum", "Short-term momentum", "Reacts within days: the 5-day average against the 20-day.", "fast=5 slow=20"
    ),
    StrategyTemplate(
        "medium",
        "Medium-term trend",
        "Follows trends of a season: the 50-day average against the 100-day.",
        "fast=50 slow=100",
    ),
    StrategyTemplate(
        "golden-cross",
        "Golden cross",
        "The classic long-term signal: the 50-day average against the "
        "200-day, which takes most of a year of prices to warm up.",
        "fast=50 slow=200",
    ),
)


def strategy_template(key: str | None) -> StrategyTemplate | None:
    """The template with this key, or None (an unknown key is simply no template)."""
    return next((t for t in STRATEGY_TEMPLATES if t.key == key), None)


def earliest_start(user_id: int) -> date:
    """The first day the user's `history_years` lets a backtest start on."""
    first, last = data_range()
    years = get_entitlements(user_id).limit("history_years")
    return first if years is None else max(first, years_before(last, years))


def require_history(user_id: int, start: date) -> None:
    """Refuse a backtest from before the first day the user's `history_years` allows.

    When a plan goes back further the upgrade page answers (UpgradeRequired), offering the cheapest plan that
    reaches `start`, else the cheapest that goes back further at all. When none does, there is nothing to sell:
    BacktestError (`history_limit`) names the earliest allowed day, for the form to show beside its From field.
    """
    entitlements = get_entitlements(user_id)
    needed = history_years_needed(start)
    if entitlements.within("history_years", needed):
        return
    years = entitlements.limit("history_years") or 0
    earliest = earliest_start(user_id)
    more = cheapest_plan_with("history_years", at_least=years + 1) if earliest > data_range()[0] else None
    if more is None:
        raise BacktestError(
            f"Pick a From date on or after {format_date(earliest)}: the {plan_display_name(entitlements.plan)} "
            "plan's history goes back that far, the furthest any plan goes.",
            code="history_limit",
        )
    raise UpgradeRequired(
        "history_years",
        entitlements.plan,
        cheapest_plan_with("history_years", at_least=needed) or more,
        limit=years,
        usage=needed,
    )


def run_backtest(user_id: int, strategy_id: int, start: date, end: date) -> Backtest:
    """Run the strategy over [start, end] and store the result; counted against `backtests_per_month`."""
    strategy = get_strategy(user_id, strategy_id)
    ensure_editable(user_id, strategy)
    require_history(user_id, start)
    # Rules saved before read_rules was strict may not read: the user is told to fix them, no default is run.
    result = run_crossover(read_rules(strategy.rules), start, end)
    _lock_user(user_id)
    require_within_limit(user_id, "backtests_per_month", count_backtests_this_month(user_id))
    backtest = Backtest(strategy_id=strategy.id, user_id=user_id, start_date=start, end_date=end, result=result)
    db.session.add(backtest)
    db.session.commit()
    return backtest


def get_backtest(user_id: int, strategy_id: int, backtest_id: int) -> Backtest:
    """One of the user's backtests of this strategy, or NotFound."""
    backtest = db.session.get(Backtest, backtest_id)
    if backtest is None or backtest.user_id != user_id or backtest.strategy_id != strategy_id:
        raise NotFound()
    return backtest


def alert_settings(user_id: int) -> AlertSettings:
    """The user's alert settings (defaults, unsaved, when they never saved any)."""
    return db.session.get(AlertSettings, user_id) or AlertSettings(
        user_id=user_id, email_enabled=False, realtime_enabled=False
    )


def save_alert_settings(user_id: int, email_enabled: bool, realtime_enabled: bool) -> AlertSettings:
    """Save alert settings; email alerts need `email_alerts`, the real-time option `realtime_alerts`."""
    require_feature(user_id, "email_alerts")
    if realtime_enabled:
        require_feature(user_id, "realtime_alerts")
    settings = db.session.get(AlertSettings, user_id)
    if settings is None:
        settings = AlertSettings(user_id=user_id)
        db.session.add(settings)
    settings.email_enabled = email_enabled
    settings.realtime_enabled = realtime_enabled
    db.session.commit()
    return settings


@dataclass(frozen=True)
class Usage:
    """One line of the account page: "2 of 3 strategies", with an upgrade offer near the limit."""

    key: str
    used: int
    limit: int | None  # None: unlimited
    upgrade_plan: str | None = None
    upgrade_plan_display: str | None = None
    upgrade_limit: int | None = None

    @property
    def label(self) -> str:
        return feature_label(self.key)

    @property
    def text(self) -> str:
        """ "2 of 3 strategies", "14 of 20 backtests this month", "7 strategies · unlimited"."""
        if self.limit is None:
            return f"{count_phrase(self.key, self.used)} · unlimited"
        return f"{self.used} of {count_phrase(self.key, self.limit)}"

    @property
    def unit(self) -> str:
        return {"strategies_max": "strategies", "backtests_per_month": "backtests a month"}.get(self.key, self.key)

    @property
    def percent(self) -> int:
        if self.limit is None:
            return 0
        return 100 if self.limit == 0 else min(100, round(self.used * 100 / self.limit))

    @property
    def near_limit(self) -> bool:
        """At 80% of the allowance or more: time to offer the upgrade."""
        return self.limit is not None and self.used * 100 >= self.limit * 80

    @property
    def over_limit(self) -> bool:
        return self.limit is not None and self.used > self.limit


def usage_summary(
    user_id: int, used: Mapping[str, int] | None = None, entitlements: Entitlements | None = None
) -> list[Usage]:
    """Usage against the counted limits, with the cheapest upgrade for those at 80% or more. `used` and
    `entitlements` are given when the caller read them already (`used` keys: `strategies_max`,
    `backtests_per_month`)."""
    if entitlements is None:
        entitlements = get_entitlements(user_id)
    if used is None:
        used = {
            "strategies_max": count_strategies(user_id),
            "backtests_per_month": count_backtests_this_month(user_id),
        }
    rows = []
    for key in ("strategies_max", "backtests_per_month"):
        used_now = used[key]
        limit = entitlements.limit(key)
        row = Usage(key=key, used=used_now, limit=limit)
        if row.near_limit:
            plan = cheapest_plan_with(key, at_least=(limit or 0) + 1)
            if plan is not None:
                upgrade_limit = next((f.limit_value for f in plan.features if f.key == key), None)
                row = Usage(
                    key=key,
                    used=used_now,
                    limit=limit,
                    upgrade_plan=plan.name,
                    upgrade_plan_display=plan.display_name,
                    upgrade_limit=upgrade_limit,
                )
        rows.append(row)
    return rows
