"""An append-only trail of what changed for whom."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model, db
from app.models.base import JSONType, UTCDateTime, utcnow


class AuditLog(Model):
    __tablename__ = "audit_logs"
    __table_args__ = (
        Index("ix_audit_logs_user_id_created_at", "user_id", "created_at"),
        # The admin dashboard counts one action over a window (migration 0004 adds a JSONB index on PostgreSQL).
        Index("ix_audit_logs_action_created_at", "action", "created_at"),
        # "Paid since it failed?" looks up payment.* entries by invoice (PostgreSQL: an index on the JSONB text).
        Index(
            "ix_audit_logs_payment_invoice",
            text("(details ->> 'invoice')"),
            postgresql_where=text("action IN ('payment.failed', 'payment.succeeded')"),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)

    def __repr__(self) -> str:
        return f"<AuditLog {self.action} user={self.user_id}>"
