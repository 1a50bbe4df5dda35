"""Every Stripe webhook event received, recorded before it is acted on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import JSONType, UTCDateTime, utcnow

EVENT_STATUSES = ("received", "processed", "failed", "ignored")


class StripeEvent(Model):
    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_status_received_at", "status", "received_at"),
        Index("ix_stripe_events_received_at", "received_at"),  # the newest events on the admin dashboard (0005)
        # The admin's user lookup finds a customer's events by the JSONB payload (PostgreSQL only, migration 0004).
        Index("ix_stripe_events_object_customer", text("(((payload -> 'data') -> 'object') ->> 'customer')")).ddl_if(
            dialect="postgresql"
        ),
        Index(
            "ix_stripe_events_customer_object_id",
            text("(((payload -> 'data') -> 'object') ->> 'id')"),
            postgresql_where=text("type LIKE 'customer.%'"),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="received", nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)

    def __repr__(self) -> str:
        return f"<StripeEvent {self.id} {self.type} {self.status}>"


#: Rows per status in `stripe_event_counts`: deliveries of different events mostly add to different rows, so a
#: delivery's insert seldom waits on another delivery's transaction.
EVENT_COUNT_SHARDS = 16


class StripeEventCount(Model):
    """Recorded webhook events per status, kept by database triggers (migration 0011_stripe_event_counts).

    Each status has up to `EVENT_COUNT_SHARDS` rows whose sum is the number of events in that status; an event
    counts in the row its id's last character picks (its code point modulo the shards). A delivery inserts its event
    at the start of a transaction that lasts as long as its handler, and a single row per status, locked by that
    insert until the commit, would make every other delivery wait for it. Kept in the transaction of the write,
    whoever writes (the app, `flask` commands, bulk SQL); a status change is counted at commit (0014), and a queue
    worker's transaction adds all its count changes up inside its COMMIT, in key order (0015_drain_batch_counts: a
    drain applies many events per transaction). TRUNCATE fires no trigger: truncate this table with `stripe_events`
    (tests truncate every table).
    """

    __tablename__ = "stripe_event_counts"

    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    events: Mapped[int] = mapped_column(BigInteger, nullable=False)

    def __repr__(self) -> str:
        return f"<StripeEventCount {self.status}[{self.shard}]={self.events}>"
