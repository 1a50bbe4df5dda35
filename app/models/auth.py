"""Server-side state of log-ins: each browser session and each API token family, and verified addresses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.base import UTCDateTime, utcnow

AUTH_SESSION_KINDS = ("web", "api")


class AuthSession(Model):
    """One log-in: a browser session (`web`) or the family of tokens one `/auth/token` call started (`api`).

    The signed cookie and every token carry the row's id; a request is let in only while the row is neither
    revoked nor expired, so log-out, a password change or "log out everywhere" end it at once, wherever a copy
    of the cookie or token is. An `api` family keeps the id of the one refresh token that may still be used:
    presenting any other of its refresh tokens is a reuse, which revokes the family.
    """

    __tablename__ = "auth_sessions"
    __table_args__ = (CheckConstraint("kind IN ('web', 'api')", name="kind"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    refresh_jti: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(32))

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and self.expires_at > now

    def __repr__(self) -> str:
        return f"<AuthSession {self.kind} user={self.user_id} revoked={self.revoked_at is not None}>"


class VerifiedEmail(Model):
    """The address a user proved to own by following the link mailed to it; verified while it is the login email."""

    __tablename__ = "verified_emails"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
