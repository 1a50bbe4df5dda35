"""Every Stripe webhook event received, recorded before it is acted on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, text
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
