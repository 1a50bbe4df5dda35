"""The plans people can be on, and what each plan includes."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, ForeignKey, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.base import TimestampMixin

BILLING_CYCLES = ("monthly", "yearly")


class PlanPricing:
    """Price arithmetic shared by the model and the cached catalog snapshot (`catalog.PlanView`).

    Needs `price_monthly`, `price_yearly` (Decimal or None) and `stripe_price_id_monthly/_yearly`.
    """

    if TYPE_CHECKING:  # provided by the classes that use the mix-in (columns or dataclass fields)
        price_monthly: Decimal
        price_yearly: Decimal | None
        stripe_price_id_monthly: str | None
        stripe_price_id_yearly: str | None

    @property
    def is_free(self) -> bool:
        return self.price_monthly == 0

    def price_for(self, cycle: str) -> Decimal | None:
        """The plan's price for a billing cycle, or None when the plan has no such cycle."""
        return self.price_monthly if cycle == "monthly" else self.price_yearly

    def stripe_price_id_for(self, cycle: str) -> str | None:
        return self.stripe_price_id_monthly if cycle == "monthly" else self.stripe_price_id_yearly

    @property
    def yearly_saving(self) -> Decimal | None:
        """What paying yearly saves against twelve monthly payments."""
        if self.price_yearly is None:
            return None
        return self.price_monthly * 12 - self.price_yearly

    @property
    def yearly_saving_percent(self) -> int | None:
        saving = self.yearly_saving
        if saving is None or not self.price_monthly:
            return None
        return round(saving / (self.price_monthly * 12) * 100)


class SubscriptionPlan(PlanPricing, TimestampMixin, Model):
    __tablename__ = "subscription_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    price_monthly: Mapped[Decimal] = mapped_column(Numeric(10, 2), nullable=False)
    price_yearly: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    stripe_price_id_monthly: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_price_id_yearly: Mapped[str | None] = mapped_column(String(255), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    sort_order: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    features: Mapped[list[PlanFeature]] = relationship(
        back_populates="plan", order_by="PlanFeature.sort_order", cascade="all, delete-orphan"
    )

    def __repr__(self) -> str:
        return f"<SubscriptionPlan {self.name}>"


class PlanFeature(Model):
    """A feature a plan includes. No row means the plan does not include it.

    `kind` is "limit" (a counted allowance: `limit_value`, NULL meaning unlimited) or "flag" (on).
    """

    __tablename__ = "plan_features"
    __table_args__ = (UniqueConstraint("plan_id", "key", name="uq_plan_features_plan_id_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("subscription_plans.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    display_name: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False, default="flag")
    limit_value: Mapped[int | None] = mapped_column(Integer)
    sort_order: Mapped[int] = mapped_column(Integer, default=0, nullable=False)

    plan: Mapped[SubscriptionPlan] = relationship(back_populates="features")

    @property
    def value(self) -> bool | int | None:
        """True for a flag; the limit (None = unlimited) for a counted feature."""
        return True if self.kind == "flag" else self.limit_value

    def __repr__(self) -> str:
        return f"<PlanFeature {self.key}={self.value}>"
