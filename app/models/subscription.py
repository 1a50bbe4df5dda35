"""The local copy of each Stripe subscription (Stripe is the source of truth)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.base import TimestampMixin, UTCDateTime

if TYPE_CHECKING:
    from app.models.plan import SubscriptionPlan
    from app.models.user import User

#: Stripe's subscription statuses.
STATUSES = ("incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused")
#: Statuses that grant the plan: in good standing, or past due while Stripe retries the payment (our policy).
ACCESS_STATUSES = ("trialing", "active", "past_due")
#: Statuses that still count as a live subscription (a user must never have two).
LIVE_STATUSES = ("incomplete", "trialing", "active", "past_due", "unpaid", "paused")


class UserSubscription(TimestampMixin, Model):
    __tablename__ = "user_subscriptions"
    __table_args__ = (
        Index("ix_user_subscriptions_user_id_status", "user_id", "status"),
        Index("ix_user_subscriptions_status", "status"),  # failed payments outstanding on the admin dashboard
        # The admin dashboard (migration 0005): subscriptions started in a window (MRR history, churn) ...
        Index(
            "ix_user_subscriptions_created_at", "created_at", postgresql_include=["status", "plan_id", "billing_cycle"]
        ),
        # ... live ones counted by plan and cycle (revenue) and canceled ones by when they ended (PostgreSQL only).
        Index(
            "ix_user_subscriptions_live",
            "plan_id",
            "billing_cycle",
            postgresql_where=text("status IN ('trialing', 'active', 'past_due')"),
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_user_subscriptions_canceled_ended",
            text("(coalesce(ended_at, canceled_at, updated_at))"),
            postgresql_include=["ended_at", "canceled_at", "updated_at", "created_at", "plan_id", "billing_cycle"],
            postgresql_where=text("status = 'canceled'"),
        ).ddl_if(dialect="postgresql"),
        # Canceled ones whose row was written after they had ended, by when it was written (churn, migration 0012).
        Index(
            "ix_user_subscriptions_canceled_before_created",
            "created_at",
            postgresql_include=["ended_at", "canceled_at", "updated_at"],
            postgresql_where=text("status = 'canceled' AND coalesce(ended_at, canceled_at, updated_at) < created_at"),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    plan_id: Mapped[int] = mapped_column(ForeignKey("subscription_plans.id"), nullable=False, index=True)
    billing_cycle: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    stripe_subscription_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: `created` (unix seconds) of the newest Stripe event applied to this row: older events are skipped.
    last_event_at: Mapped[int | None] = mapped_column(BigInteger)

    user: Mapped[User] = relationship(back_populates="subscriptions")
    plan: Mapped[SubscriptionPlan] = relationship()

    @property
    def grants_access(self) -> bool:
        """Whether this subscription gives its plan's features now."""
        return self.status in ACCESS_STATUSES

    def __repr__(self) -> str:
        return f"<UserSubscription {self.stripe_subscription_id} {self.status}>"
