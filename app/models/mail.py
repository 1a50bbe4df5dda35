"""Mail to send, recorded in the same transaction as the change that causes it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import UTCDateTime, utcnow

#: Every kind of mail, one per subject of app/services/mail.py's SUBJECTS: the metrics label their counters with them.
MAIL_KINDS = (
    "payment_failed",
    "subscription_activated",
    "cancellation_scheduled",
    "plan_change_scheduled",
    "scheduled_change_applied",
    "subscription_ended",
    "password_reset",
    "verify_email",
    "alert_signal",
    "alert_digest",
    "email_change",
    "email_change_notice",
    "email_change_taken",
    "signup_attempt",
)


class MailOutbox(Model):
    """One row per (cause, kind): a redelivered webhook finds its row and never mails twice."""

    __tablename__ = "mail_outbox"
    __table_args__ = (UniqueConstraint("dedupe_key", "kind", name="uq_mail_outbox_dedupe_key_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="pending", nullable=False, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: When the mail may be tried again after a failed attempt (app/services/mail.py's MAIL_BACKOFF); NULL: never
    #: tried, due at once.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<MailOutbox {self.kind} {self.recipient} {self.status}>"
