"""Business figures from the local copy of the subscriptions: one SQL aggregation each, Decimal all the way.

`/metrics` (the billing_mrr_dollars gauges) and the admin dashboard both call `revenue_summary()`, so the two
can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, exists, func, literal_column, or_, select, true
from sqlalchemy.orm import aliased

from app.extensions import db
from app.models import (
    ACCESS_STATUSES,
    AuditLog,
    DailyCount,
    DailySubscriptionChange,
    StripeEvent,
    SubscriptionPlan,
    User,
    UserSubscription,
    normalize_email,
    utcnow,
)
from app.models.daily import SIGNUPS, conversions_metric, converted_metric
from app.models.stripe_event import StripeEventCount

#: Statuses that count as recurring revenue: the ones that grant the plan (past_due while Stripe retries).
REVENUE_STATUSES = ACCESS_STATUSES


@dataclass(frozen=True)
class PlanRevenue:
    plan: str
    cycle: str
    subscriptions: int
    #: What these subscriptions bill per cycle, summed (monthly prices for monthly, yearly for yearly).
    billed_per_cycle: Decimal

    @property
    def mrr(self) -> Decimal:
        return self.billed_per_cycle / 12 if self.cycle == "yearly" else self.billed_per_cycle


@dataclass(frozen=True)
class RevenueSummary:
    by_plan: list[PlanRevenue]
    #: Sum of the monthly prices plus the sum of the yearly prices divided by 12 (exact, not rounded).
    mrr: Decimal
    #: The monthly prices x 12 plus the yearly prices: MRR x 12, computed without the division so it is exact (so
    #: not always the MRR rounded to the cent x 12, and the dashboard does not label it so).
    arr: Decimal
    active_subscriptions: int


def _live_counts():
    """Live subscriptions by (plan, cycle), priced per group (sum(price) = count x price).

    The count is the sum of `daily_subscription_changes` (app/models/daily.py, kept by triggers in the
    transaction of every write): +1 the day a subscription that counts for revenue started, -1 the day a canceled
    one ended, so the sum over all days per plan and cycle is exactly the number live now — a few thousand rows
    read instead of every live subscription."""
    change = DailySubscriptionChange
    counts = (
        select(
            change.plan_id.label("plan_id"),
            change.billing_cycle.label("cycle"),
            func.sum(change.net).label("n"),
        )
        .group_by(change.plan_id, change.billing_cycle)
        .having(func.sum(change.net) != 0)
        .subquery()
    )
    price = case((counts.c.cycle == "yearly", SubscriptionPlan.price_yearly), else_=SubscriptionPlan.price_monthly)
    return db.session.execute(
        select(SubscriptionPlan.name, counts.c.cycle, counts.c.n, counts.c.n * price)
        .join(SubscriptionPlan, SubscriptionPlan.id == counts.c.plan_id)
        .order_by(SubscriptionPlan.sort_order, counts.c.cycle)
    ).all()


def revenue_summary() -> RevenueSummary:
    """MRR, ARR and live subscriptions by plan and cycle: the live subscriptions (`_live_counts`) priced by plan."""
    rows = [
        PlanRevenue(plan=name, cycle=cycle, subscriptions=int(count), billed_per_cycle=Decimal(str(total or 0)))
        for name, cycle, count, total in _live_counts()
    ]
    monthly = sum((r.billed_per_cycle for r in rows if r.cycle != "yearly"), Decimal(0))
    yearly = sum((r.billed_per_cycle for r in rows if r.cycle == "yearly"), Decimal(0))
    return RevenueSummary(
        by_plan=rows,
        mrr=monthly + yearly / 12,
        arr=monthly * 12 + yearly,
        active_subscriptions=sum(r.subscriptions for r in rows),
    )


# ---------------------------------------------------------------------------------------------------------------
# The admin dashboard's figures: still one SQL statement each, so they stay fast at a million subscriptions
# (the indexes are in migration 0004_admin_indexes).
# ---------------------------------------------------------------------------------------------------------------


def json_text(column: Any, *path: str) -> Any:
    """The text at `path` in a JSON column, spelled on PostgreSQL exactly as migration 0004's expression indexes
    (`details ->> 'invoice'`, literal keys) so the planner can use them; SQLAlchemy's JSON path elsewhere."""
    if db.engine.dialect.name != "postgresql":
        return column[path if len(path) > 1 else path[0]].as_string()
    expression = column
    for index, key in enumerate(path):
        expression = expression.op("->>" if index == len(path) - 1 else "->")(literal_column(f"'{key}'"))
    return expression


def ended_at_expression():
    """When a canceled subscription stopped: ended_at, else when it was canceled, else when the row last changed."""
    return func.coalesce(UserSubscription.ended_at, UserSubscription.canceled_at, UserSubscription.updated_at)


@dataclass(frozen=True)
class Churn:
    days: int
    #: Subscriptions that ended (status canceled) inside the window.
    churned: int
    #: Subscriptions that were live when the window started.
    active_at_start: int

    @property
    def rate(self) -> Decimal | None:
        """churned ÷ active at the start of the window (None when nobody was subscribed then)."""
        if not self.active_at_start:
            return None
        return Decimal(self.churned) / Decimal(self.active_at_start)


def status_metric(status: str) -> str:
    """The `daily_counts` metric of the subscriptions in `status` (migration 0012, kept by triggers): per UTC day,
    those created that day — a canceled one on the day it ended instead."""
    return f"subscriptions.{status}"


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def churn(days: int = 30, now: datetime | None = None) -> Churn:
    """Subscriptions canceled or ended in the last `days` ÷ subscriptions live at the window's start.

    From kept per-day rows, the window's two partial days read from indexes (so the figures stay exact to the
    second, not rounded to days):
    - churned: canceled ones that ended in [start, now) = the `subscriptions.canceled` counts of the days after the
      start's day up to today, plus those that ended in the rest of the start's day, minus today's that end at or
      after `now` (the partial index on when a canceled subscription ended, migration 0005);
    - live at the start: every subscription that counted for revenue and began before it, minus the canceled ones
      that ended before it = the `daily_subscription_changes` of the days before the start's day, plus the
      subscriptions that began and minus those that ended on that day before the start (indexes of migration 0005);
      plus the canceled ones that ended before the start but were created after it (a row written after the
      subscription had ended: their own partial index, migration 0012).
    """
    now = now or utcnow()
    start = now - timedelta(days=days)
    start_day, today = start.astimezone(UTC).date(), now.astimezone(UTC).date()
    start_midnight = _utc_midnight(start_day)
    ended, created = ended_at_expression(), UserSubscription.created_at
    canceled = UserSubscription.status == "canceled"

    def count(*where: Any) -> Any:
        return select(func.count()).where(*where).scalar_subquery()

    def ended_between(low: datetime, high: datetime) -> Any:
        return count(canceled, ended >= low, ended < high)

    kept_ended = select(func.coalesce(func.sum(DailyCount.value), 0)).where(
        DailyCount.metric == status_metric("canceled"), DailyCount.day > start_day, DailyCount.day <= today
    )
    net_before = select(func.coalesce(func.sum(DailySubscriptionChange.net), 0)).where(
        DailySubscriptionChange.day < start_day
    )
    counted = UserSubscription.status.in_((*REVENUE_STATUSES, "canceled"))
    row = db.session.execute(
        select(
            kept_ended.scalar_subquery(),
            ended_between(start, _utc_midnight(start_day + timedelta(days=1))),
            ended_between(now, _utc_midnight(today + timedelta(days=1))),
            net_before.scalar_subquery(),
            count(counted, created >= start_midnight, created < start),
            ended_between(start_midnight, start),
            count(canceled, ended < created, created >= start, ended < start),
        )
    ).one()
    kept, ended_after_start, ended_after_now, live_before, began, ended_before, ended_before_created = (
        int(n or 0) for n in row
    )
    churned = kept + ended_after_start - ended_after_now
    return Churn(days, churned, live_before + began - ended_before + ended_before_created)


@dataclass(frozen=True)
class Conversion:
    path: str  # "free_starter", "free_pro", "starter_pro"
    label: str
    #: Conversions in the window.
    recent: int
    #: Distinct people who ever made this move.
    converted_users: int
    #: Who could have made it: every user for Free→X (everyone starts on Free), Starter's subscribers for Starter→Pro.
    base_users: int

    @property
    def rate(self) -> Decimal | None:
        return Decimal(self.converted_users) / Decimal(self.base_users) if self.base_users else None


CONVERSION_PATHS = (("free_starter", "Free → Starter"), ("free_pro", "Free → Pro"), ("starter_pro", "Starter → Pro"))


def _window_start(days: int, now: datetime | None) -> date:
    """The first of the last `days` UTC calendar days (today included): the dashboard's windows by day."""
    return (now or utcnow()).date() - timedelta(days=days - 1)


def conversions(days: int = 30, now: datetime | None = None) -> list[Conversion]:
    """Free→Starter, Free→Pro (`subscription.activated`) and Starter→Pro (`subscription.plan_changed`): how many
    in the last `days` calendar days (today included, as the activity chart), and the share of the people who
    could have made the move.

    One aggregation over `daily_counts` (app/models/daily.py: a few rows per day, kept by triggers): the audit
    entries per path and day, every sign-up, and the users whose first move on a path — or onto Starter — was that
    day (so their sums are the distinct converted users and Starter's subscribers)."""
    start = _window_start(days, now)
    value, metric = func.sum(DailyCount.value), DailyCount.metric
    row = db.session.execute(
        select(
            *(
                value.filter(metric == conversions_metric(path), DailyCount.day >= start)
                for path, _l in CONVERSION_PATHS
            ),
            value.filter(metric == SIGNUPS),
            *(value.filter(metric == converted_metric(path)) for path, _label in CONVERSION_PATHS),
            value.filter(metric == converted_metric("reached_starter")),
        ).where(
            metric.in_(
                [
                    SIGNUPS,
                    converted_metric("reached_starter"),
                    *(f(path) for path, _label in CONVERSION_PATHS for f in (conversions_metric, converted_metric)),
                ]
            )
        )
    ).one()
    recent, total_users, ever, starters = row[:3], row[3] or 0, row[4:7], row[7] or 0
    out = []
    for index, (path, label) in enumerate(CONVERSION_PATHS):
        base = starters if path == "starter_pro" else total_users
        out.append(Conversion(path, label, int(recent[index] or 0), int(ever[index] or 0), int(base)))
    return out


@dataclass(frozen=True)
class FailedPayments:
    #: Subscriptions Stripe is retrying (past_due) or gave up on (unpaid).
    past_due: int
    unpaid: int
    #: Invoices with a `payment.failed` and no later `payment.succeeded`, and what they were for (cents).
    open_invoices: int
    open_amount_cents: int

    @property
    def subscriptions(self) -> int:
        return self.past_due + self.unpaid


def failed_payments() -> FailedPayments:
    """Payments still failing: subscriptions past_due/unpaid (the sums of their kept `daily_counts`, see
    `status_metric`), and failed invoices not paid since."""
    later_success = aliased(AuditLog)
    invoice = json_text(AuditLog.details, "invoice")
    unpaid_invoices = (
        select(invoice.label("invoice"), func.max(AuditLog.details["amount"].as_integer()).label("amount"))
        .where(AuditLog.action == "payment.failed")
        .where(
            ~exists().where(
                later_success.action == "payment.succeeded",
                json_text(later_success.details, "invoice") == invoice,
                later_success.created_at >= AuditLog.created_at,
            )
        )
        .group_by(invoice)
        .subquery()
    )
    kept = func.sum(DailyCount.value)
    statuses = (
        select(
            kept.filter(DailyCount.metric == status_metric("past_due")),
            kept.filter(DailyCount.metric == status_metric("unpaid")),
        )
        .where(DailyCount.metric.in_((status_metric("past_due"), status_metric("unpaid"))))
        .subquery()
    )
    invoices = select(func.count(), func.coalesce(func.sum(unpaid_invoices.c.amount), 0)).subquery()
    past_due, unpaid, count, amount = db.session.execute(
        select(statuses.c[0], statuses.c[1], invoices.c[0], invoices.c[1]).select_from(
            statuses.join(invoices, true())  # one row each
        )
    ).one()
    return FailedPayments(int(past_due or 0), int(unpaid or 0), count or 0, int(amount or 0))


@dataclass(frozen=True)
class Point:
    day: date
    value: Decimal


def _as_date(value: Any) -> date:
    """func.date() answers a date on PostgreSQL and a string on SQLite."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def mrr_history(days: int = 90, now: datetime | None = None, revenue: RevenueSummary | None = None) -> list[Point]:
    """MRR at the end of each of the last `days` days, rebuilt from when subscriptions started and ended.

    `daily_subscription_changes` (app/models/daily.py, kept by triggers) holds, per day, plan and cycle, the
    subscriptions that started (+) and the canceled ones that ended (-) that day, so the sum of every change is
    today's live revenue (`revenue_summary()`'s figures). Walking back from it, only the window's rows are read
    (at most days × plans × cycles, priced per group: count × price): the MRR at the end of day D is the total
    minus the changes after D, monthly + yearly / 12 exactly as the gauge, so today's point is the gauge's figure.
    Earlier points price each subscription at its current plan.

    `revenue`: today's `revenue_summary()` when the caller already has it (the dashboard), so the live revenue is
    not counted a second time.
    """
    now = now or utcnow()
    today = now.date()
    first = _window_start(days, now)
    change = DailySubscriptionChange
    price = case(
        (change.billing_cycle == "yearly", SubscriptionPlan.price_yearly), else_=SubscriptionPlan.price_monthly
    )
    rows = db.session.execute(
        select(change.day, change.billing_cycle, func.sum(change.net * price))
        .join(SubscriptionPlan, SubscriptionPlan.id == change.plan_id)
        .where(change.day >= first)
        .group_by(change.day, change.billing_cycle)
    ).all()
    running = {"monthly": Decimal(0), "yearly": Decimal(0)}
    live_revenue = revenue.by_plan if revenue is not None else revenue_summary().by_plan
    for plan_revenue in live_revenue:
        running["yearly" if plan_revenue.cycle == "yearly" else "monthly"] += plan_revenue.billed_per_cycle
    by_day: dict[date, dict[str, Decimal]] = {}
    for raw_day, cycle, total in rows:
        day, amount, key = _as_date(raw_day), Decimal(str(total or 0)), "yearly" if cycle == "yearly" else "monthly"
        if day > today:  # not yet part of today's figure
            running[key] -= amount
        else:
            by_day.setdefault(day, {}).setdefault(key, Decimal(0))
            by_day[day][key] += amount
    points = []
    for offset in range(days):
        day = today - timedelta(days=offset)
        points.append(Point(day, running["monthly"] + running["yearly"] / 12))
        for key, amount in by_day.get(day, {}).items():
            running[key] -= amount
    points.reverse()
    return points


@dataclass(frozen=True)
class ActivityDay:
    day: date
    signups: int
    conversions: int


def activity_history(days: int = 30, now: datetime | None = None) -> list[ActivityDay]:
    """Sign-ups (new users) and conversions (activations and Starter→Pro) per day: the window's `daily_counts`."""
    start = _window_start(days, now)
    value = func.sum(DailyCount.value)
    counts = {
        _as_date(day): (signups or 0, converted or 0)
        for day, signups, converted in db.session.execute(
            select(
                DailyCount.day,
                value.filter(DailyCount.metric == SIGNUPS),
                value.filter(DailyCount.metric.in_([conversions_metric(p) for p, _label in CONVERSION_PATHS])),
            )
            .where(DailyCount.day >= start)
            .group_by(DailyCount.day)
        )
    }
    return [
        ActivityDay(day, *(int(n) for n in counts.get(day, (0, 0))))
        for day in (start + timedelta(days=i) for i in range(days))
    ]


def recent_audit_log(limit: int = 50) -> list[tuple[AuditLog, str | None]]:
    """The newest audit entries with their user's email: the entries picked first (ix_audit_logs_created_at, ties
    broken by id), then only those joined to their users."""
    newest = _newest_first(select(AuditLog.id)).limit(limit).subquery()
    return [
        (entry, email)
        for entry, email in db.session.execute(
            _newest_first(
                select(AuditLog, User.email)
                .join(newest, newest.c.id == AuditLog.id)
                .outerjoin(User, User.id == AuditLog.user_id)
            )
        )
    ]


def _newest_first(query: Any) -> Any:
    """Audit entries newest first, ties broken by id."""
    return query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())


def recent_webhook_events(limit: int = 25) -> list[StripeEvent]:
    """The newest webhook events, failed ones first so a replay is never below the fold."""
    failed = list(
        db.session.scalars(  # few: ix_stripe_events_status_received_at
            select(StripeEvent)
            .where(StripeEvent.status == "failed")
            .order_by(StripeEvent.received_at.desc())
            .limit(limit)
        )
    )
    if len(failed) >= limit:
        return failed
    # The newest others, walking ix_stripe_events_received_at backwards (migration 0005).
    return failed + list(
        db.session.scalars(
            select(StripeEvent)
            .where(StripeEvent.status != "failed")
            .order_by(StripeEvent.received_at.desc())
            .limit(limit - len(failed))
        )
    )


def webhook_status_counts() -> dict[str, int]:
    """Events by status (received, processed, failed, ignored): the sums of `stripe_event_counts`
    (app/models/stripe_event.py, kept by triggers in the transaction of every write), a few dozen rows read instead
    of every recorded event."""
    events = func.sum(StripeEventCount.events)
    return {
        status: int(count)
        for status, count in db.session.execute(
            select(StripeEventCount.status, events).group_by(StripeEventCount.status).having(events != 0)
        )
    }


@dataclass
class UserReport:
    user: User
    subscriptions: list[UserSubscription]
    events: list[StripeEvent]
    audit: list[AuditLog]


def event_about_customer(customer_id: str) -> Any:
    """Events whose data.object.customer is the customer, or customer.* events about it (indexed, see 0004)."""
    return or_(
        json_text(StripeEvent.payload, "data", "object", "customer") == customer_id,
        and_(
            StripeEvent.type.like("customer.%"), json_text(StripeEvent.payload, "data", "object", "id") == customer_id
        ),
    )


def user_report(email: str, events_limit: int = 50, audit_limit: int = 100) -> UserReport | None:
    """Everything about one user by email: subscription rows, their Stripe events, their audit trail."""
    user = db.session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        return None
    subscriptions = list(
        db.session.scalars(
            select(UserSubscription)
            .where(UserSubscription.user_id == user.id)
            .order_by(UserSubscription.created_at.desc())
        )
    )
    events: list[StripeEvent] = []
    if user.stripe_customer_id:
        events = list(
            db.session.scalars(
                select(StripeEvent)
                .where(event_about_customer(user.stripe_customer_id))
                .order_by(StripeEvent.stripe_created.desc(), StripeEvent.received_at.desc())
                .limit(events_limit)
            )
        )
    audit = list(
        db.session.scalars(
            select(AuditLog)
            .where(AuditLog.user_id == user.id)
            .order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
            .limit(audit_limit)
        )
    )
    return UserReport(user, subscriptions, events, audit)


@dataclass
class Dashboard:
    generated_at: datetime
    revenue: RevenueSummary
    churn: Churn
    conversions: list[Conversion]
    failed_payments: FailedPayments
    mrr_history: list[Point]
    activity: list[ActivityDay]
    events: list[StripeEvent]
    event_counts: dict[str, int]
    audit: list[tuple[AuditLog, str | None]]

    def chart_data(self) -> dict[str, Any]:
        """What admin.js draws, as JSON-ready values (strings for money, so no float rounding on the way)."""
        return {
            "mrr": {
                "labels": [p.day.isoformat() for p in self.mrr_history],
                "values": [str(p.value.quantize(Decimal("0.01"))) for p in self.mrr_history],
            },
            "activity": {
                "labels": [d.day.isoformat() for d in self.activity],
                "signups": [d.signups for d in self.activity],
                "conversions": [d.conversions for d in self.activity],
            },
        }


def dashboard(now: datetime | None = None) -> Dashboard:
    """Every figure of the admin dashboard, each from its own single aggregation."""
    now = now or utcnow()
    revenue = revenue_summary()
    return Dashboard(
        generated_at=now,
        revenue=revenue,
        churn=churn(30, now),
        conversions=conversions(30, now),
        failed_payments=failed_payments(),
        mrr_history=mrr_history(90, now, revenue),
        activity=activity_history(30, now),
        events=recent_webhook_events(25),
        event_counts=webhook_status_counts(),
        audit=recent_audit_log(50),
    )
