"""Alerts: the strategies a user watches, and the signals the scheduled evaluation found on them."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import UTCDateTime, utcnow

SIGNAL_SIDES = ("buy", "sell")
#: How a signal reaches its owner: `realtime` (one mail at once), `digest` (the next daily digest), `none` (listed
#: on the Alerts page only: email alerts were off, or the plan stopped including them before the digest went out).
SIGNAL_DELIVERIES = ("realtime", "digest", "none")


class AlertWatch(Model):
    """A strategy its owner watches: the scheduled evaluation looks at it on every new bar."""

    __tablename__ = "alert_watches"

    strategy_id: Mapped[int] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    def __repr__(self) -> str:
        return f"<AlertWatch strategy={self.strategy_id} user={self.user_id}>"


class AlertSignal(Model):
    """A crossover seen on one bar of a watched strategy, recorded once.

    Unique on (strategy, bar date, side): an evaluation run twice, or by two workers at once, inserts the row
    once, and only the insert that wrote it queues its mail.
    """

    __tablename__ = "alert_signals"
    __table_args__ = (
        UniqueConstraint("strategy_id", "bar_date", "side", name="uq_alert_signals_strategy_id_bar_date_side"),
        Index("ix_alert_signals_user_id_bar_date", "user_id", "bar_date"),
        CheckConstraint("side IN ('buy', 'sell')", name="side"),
        CheckConstraint("delivery IN ('realtime', 'digest', 'none')", name="delivery"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    bar_date: Mapped[date] = mapped_column(Date, nullable=False)
    side: Mapped[str] = mapped_column(String(4), nullable=False)
    close: Mapped[Decimal] = mapped_column(Numeric(12, 2), nullable=False)
    fast: Mapped[int] = mapped_column(Integer, nullable=False)
    slow: Mapped[int] = mapped_column(Integer, nullable=False)
    delivery: Mapped[str] = mapped_column(String(8), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: When its mail (the immediate one, or the digest holding it) was queued in the outbox.
    mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<AlertSignal {self.id} strategy={self.strategy_id} {self.bar_date} {self.side}>"
