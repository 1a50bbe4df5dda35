"""Business figures from the local copy of the subscriptions: one SQL aggregation each, Decimal all the way.

`/metrics` (the billing_mrr_dollars gauges) and the admin dashboard both call `revenue_summary()`, so the two
can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import case, func, select

from app.extensions import db
from app.models import ACCESS_STATUSES, SubscriptionPlan, UserSubscription

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
    #: MRR x 12, computed without the division so it is exact.
    arr: Decimal
    active_subscriptions: int


def revenue_summary() -> RevenueSummary:
    """MRR, ARR and live subscriptions by plan and cycle, from `user_subscriptions` joined to their plans."""
    price = case(
        (UserSubscription.billing_cycle == "yearly", SubscriptionPlan.price_yearly),
        else_=SubscriptionPlan.price_monthly,
    )
    query = (
        select(
            SubscriptionPlan.name,
            UserSubscription.billing_cycle,
            func.count(UserSubscription.id),
            func.coalesce(func.sum(price), 0),
        )
        .join(SubscriptionPlan, SubscriptionPlan.id == UserSubscription.plan_id)
        .where(UserSubscription.status.in_(REVENUE_STATUSES))
        .group_by(SubscriptionPlan.name, SubscriptionPlan.sort_order, UserSubscription.billing_cycle)
        .order_by(SubscriptionPlan.sort_order, UserSubscription.billing_cycle)
    )
    rows = [
        PlanRevenue(plan=name, cycle=cycle, subscriptions=count, billed_per_cycle=Decimal(str(total)))
        for name, cycle, count, total in db.session.execute(query)
    ]
    monthly = sum((r.billed_per_cycle for r in rows if r.cycle != "yearly"), Decimal(0))
    yearly = sum((r.billed_per_cycle for r in rows if r.cycle == "yearly"), Decimal(0))
    return RevenueSummary(
        by_plan=rows,
        mrr=monthly + yearly / 12,
        arr=monthly * 12 + yearly,
        active_subscriptions=sum(r.subscriptions for r in rows),
    )
