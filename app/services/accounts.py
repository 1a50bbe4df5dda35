"""Sign-up, log-in and operator-created accounts."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import AuditLog, User, normalize_email
from app.services import DomainError

MIN_PASSWORD_LENGTH = 8


class AccountError(DomainError):
    code = "account_error"


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalize_email(email)))


def create_user(email: str, password: str, is_admin: bool = False) -> User:
    """Create an account; raises AccountError when the email is taken or the password too short."""
    email = normalize_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password")
    if find_user_by_email(email) is not None:
        raise AccountError("An account with this email already exists.", code="email_taken", status=409)
    user = User(email=email, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:  # a concurrent sign-up with the same email won the race
        db.session.rollback()
        raise AccountError("An account with this email already exists.", code="email_taken", status=409)
    db.session.add(AuditLog(user_id=user.id, action="user.created", details={"is_admin": is_admin}))
    db.session.commit()
    return user


def authenticate(email: str, password: str) -> User | None:
    """The user with this email and password, or None (the same answer for a wrong email or password)."""
    user = find_user_by_email(email)
    if user is None or not user.check_password(password):
        return None
    return user
