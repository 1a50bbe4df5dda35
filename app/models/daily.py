"""Per-day counts the admin dashboard adds up instead of counting a million rows.

Both tables are kept by database triggers (migration 0007_daily_counts) in the transaction of the write that
changes them, whoever writes — the app, a `flask` command, bulk SQL or an ON DELETE CASCADE — so the ORM has no
listener here. Days are UTC calendar days.

- `daily_counts` (day, metric) → value:
  - `signups`: users created that day;
  - `conversions.<path>`: audit entries of that conversion (`free_starter`, `free_pro`, `starter_pro`) that day;
  - `converted.<path>` and `converted.reached_starter`: users whose first such move (`user_conversions`) was that
    day; summed over every day, the distinct converted users.
- `daily_subscription_changes` (day, plan, cycle) → net: +1 on the day each subscription that counts for revenue
  (or was canceled, having counted until it ended) started, -1 on the day a canceled one ended. Summed up to a day:
  the live subscriptions by plan and cycle that day.

TRUNCATE fires no trigger: truncate these with their source tables (tests truncate every table).
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model

SIGNUPS = "signups"


def conversions_metric(path: str) -> str:
    """Audit entries of a conversion path that day."""
    return f"conversions.{path}"


def converted_metric(path: str) -> str:
    """Users whose first move on a path (or `reached_starter`) was that day."""
    return f"converted.{path}"


class DailyCount(Model):
    __tablename__ = "daily_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)

    def __repr__(self) -> str:
        return f"<DailyCount {self.day} {self.metric}={self.value}>"


class DailySubscriptionChange(Model):
    __tablename__ = "daily_subscription_changes"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("subscription_plans.id"), primary_key=True, autoincrement=False)
    billing_cycle: Mapped[str] = mapped_column(String(16), primary_key=True)
    net: Mapped[int] = mapped_column(BigInteger, nullable=False)

    def __repr__(self) -> str:
        return f"<DailySubscriptionChange {self.day} plan={self.plan_id} {self.billing_cycle} {self.net:+d}>"
