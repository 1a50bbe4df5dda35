"""People who log in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import Model
from app.models.base import TimestampMixin

if TYPE_CHECKING:
    from app.models.subscription import UserSubscription


#: Stripe accepts customer emails up to 512 characters.
BILLING_EMAIL_LENGTH = 512


def normalize_email(email: str) -> str:
    """Emails are compared case-insensitively: store them trimmed and lower-cased."""
    return email.strip().lower()


class User(UserMixin, TimestampMixin, Model):
    __tablename__ = "users"
    # The check keeps the unique index case-insensitive even for rows written outside the app.
    __table_args__ = (
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        Index("ix_users_created_at", "created_at"),  # sign-ups per day on the admin dashboard (migration 0005)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    #: The billing contact: the name and email on the Stripe customer, kept in step by `customer.updated` (set in
    #: the Customer Portal or the Dashboard). Stripe's data, shown and never trusted: the login email is `email`,
    #: changed only by a link mailed to the new address (app/services/accounts.py).
    name: Mapped[str | None] = mapped_column(String(255))
    billing_email: Mapped[str | None] = mapped_column(String(BILLING_EMAIL_LENGTH))
    #: `created` of the newest `customer.*` event applied to this user.
    customer_event_at: Mapped[int | None] = mapped_column(BigInteger)
    #: How many times the user chose "Sign out everywhere": a login-email change link carries the count it was made
    #: under and dies when it moves on, as the notice to the old address promises (app/services/accounts.py).
    logouts_everywhere: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)

    subscriptions: Mapped[list[UserSubscription]] = relationship(back_populates="user")

    def set_password(self, password: str) -> None:
        """Hash with werkzeug's scrypt; the plain password is never stored."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"
