"""The gated product: trading strategies, the backtests run on them, and alert settings."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import Model
from app.models.base import JSONType, TimestampMixin, UTCDateTime, utcnow


class Strategy(TimestampMixin, Model):
    """A user's trading strategy: a name, a description and the rules a backtest runs."""

    __tablename__ = "strategies"
    __table_args__ = (Index("ix_strategies_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(120), nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    rules: Mapped[str] = mapped_column(Text, default="", nullable=False)

    backtests: Mapped[list[Backtest]] = relationship(
        back_populates="strategy", order_by="Backtest.created_at.desc()", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Strategy {self.id} {self.name!r}>"


class Backtest(Model):
    """One run of a strategy over a date range, with its result.

    `strategy_id` is kept nullable (SET NULL on delete) on purpose: a run counts against the month's allowance
    even after its strategy is deleted, so deleting strategies cannot reset `backtests_per_month`.
    """

    __tablename__ = "backtests"
    __table_args__ = (Index("ix_backtests_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int | None] = mapped_column(ForeignKey("strategies.id", ondelete="SET NULL"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    start_date: Mapped[date] = mapped_column(Date, nullable=False)
    end_date: Mapped[date] = mapped_column(Date, nullable=False)
    #: {"total_return_pct": "12.34", "max_drawdown_pct": "-8.10", "trades": 7, ...}; decimals as strings.
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    strategy: Mapped[Strategy | None] = relationship(back_populates="backtests")

    def __repr__(self) -> str:
        return f"<Backtest {self.id} strategy={self.strategy_id}>"


class AlertSettings(TimestampMixin, Model):
    """A user's alert preferences (one row per user, created on first save)."""

    __tablename__ = "alert_settings"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    email_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    realtime_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

    def __repr__(self) -> str:
        return f"<AlertSettings user={self.user_id} email={self.email_enabled} realtime={self.realtime_enabled}>"
