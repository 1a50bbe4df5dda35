"""Read queries on the local copy of the subscriptions: the bottom layer that the rest of the services read.

Nothing here writes or asks Stripe, so every other service (entitlements, the billing page, plan changes, the
sync) can import it without importing one another.
"""

from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import ACCESS_STATUSES, LIVE_STATUSES, SubscriptionPlan, UserSubscription
from app.services.catalog import plan_by_name


def effective_subscription(user_id: int) -> UserSubscription | None:
    """The user's subscription that grants access now, if any (the newest, should Stripe ever hold two)."""
    return db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.user_id == user_id, UserSubscription.status.in_(ACCESS_STATUSES))
        .order_by(UserSubscription.created_at.desc())
        .limit(1)
    )


def live_subscription(user_id: int) -> UserSubscription | None:
    """The user's subscription that is not over yet (access or not): the one a plan change must modify."""
    return db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.user_id == user_id, UserSubscription.status.in_(LIVE_STATUSES))
        .order_by(UserSubscription.created_at.desc())
        .limit(1)
    )


def effective_plan(user_id: int) -> SubscriptionPlan | None:
    """The plan whose features the user has now: the paid plan in good standing (or past due while Stripe
    retries, or canceled at period end until that end), otherwise Free."""
    subscription = effective_subscription(user_id)
    if subscription is not None:
        return subscription.plan
    return plan_by_name("free")
