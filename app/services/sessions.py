"""Server-side log-in state: every browser session and API token family is a row that can be revoked.

A signed cookie or a JWT is only a pointer to its `AuthSession`: the request is let in while the row is live.
Log-out revokes the browser's row; a password change revokes every other row of the user; "log out everywhere"
revokes them all, web and API alike. API refresh tokens rotate: each works once, and presenting a spent one
revokes the whole family (reuse detection), since only a copy of the token can explain it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import and_, bindparam, delete, select, update

from app.extensions import db
from app.logging import get_logger
from app.models import AuthSession, utcnow

log = get_logger(__name__)

WEB, API = "web", "api"


def new_token_id() -> str:
    """An unguessable id (256 bits) for a session row or a refresh token."""
    return secrets.token_urlsafe(32)


def start(user_id: int, kind: str, lifetime: timedelta, refresh_jti: str | None = None) -> AuthSession:
    """A new live row for a log-in (added to the current transaction); the user's expired rows are pruned."""
    now = utcnow()
    db.session.execute(delete(AuthSession).where(AuthSession.user_id == user_id, AuthSession.expires_at <= now))
    row = AuthSession(
        id=new_token_id(),
        user_id=user_id,
        kind=kind,
        refresh_jti=refresh_jti,
        created_at=now,
        expires_at=now + lifetime,
    )
    db.session.add(row)
    return row


#: What makes a session row live, for a statement that joins `auth_sessions`; its parameters come from
#: `live_params`. Built once: a statement made of it is compiled once per process, not on every request.
LIVE_SESSION = and_(
    AuthSession.id == bindparam("session_id"),
    AuthSession.user_id == bindparam("user_id"),
    AuthSession.kind == bindparam("kind"),
    AuthSession.revoked_at.is_(None),
    AuthSession.expires_at > bindparam("now"),
)


def live_params(session_id: object, user_id: int, kind: str) -> dict[str, object] | None:
    """The parameters of `LIVE_SESSION` for this session id, user and kind; None for an id or user id that cannot
    name a session, so that no query is needed. (The log-in check of a browser session and the token check of an
    API token family read the user with its live session in one statement: `app.services.viewer`.)"""
    if not isinstance(session_id, str) or not session_id or len(session_id) > 64 or not 0 < user_id < 2**31:
        return None
    return {"session_id": session_id, "user_id": user_id, "kind": kind, "now": utcnow()}


def revoke(session_id: object, reason: str) -> None:
    """End one session (no-op for an unknown or already revoked id); the caller commits."""
    if not isinstance(session_id, str):
        return
    db.session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )


def revoke_all(user_id: int, reason: str, keep: str | None = None) -> int:
    """End every live session of the user, web and API, except `keep`; the caller commits. How many ended."""
    statement = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
    if keep:
        statement = statement.where(AuthSession.id != keep)
    result = db.session.execute(statement.values(revoked_at=utcnow(), revoked_reason=reason))
    count = int(getattr(result, "rowcount", 0) or 0)  # an UPDATE's CursorResult
    log.info("sessions_revoked", user_id=user_id, reason=reason, count=count)
    return count


def rotate_refresh(family_id: object, user_id: int, jti: object, lifetime: timedelta) -> str | None:
    """Spend refresh token `jti` of an API family: the next refresh token's id, or None when refused.

    The family row is locked, so two concurrent uses of one token cannot both succeed. A token of the family
    other than its current one was already spent: the family is revoked (and committed) before refusing.
    """
    if not isinstance(family_id, str) or not isinstance(jti, str):
        return None
    row = db.session.scalar(
        select(AuthSession)
        .where(AuthSession.id == family_id, AuthSession.user_id == user_id, AuthSession.kind == API)
        .with_for_update()
    )
    now = utcnow()
    if row is None or not row.is_live(now):
        db.session.rollback()
        return None
    if row.refresh_jti != jti:
        row.revoked_at, row.revoked_reason = now, "refresh_reuse"
        db.session.commit()
        log.warning("refresh_token_reused", user_id=user_id, family=family_id[:8])
        return None
    row.refresh_jti = new_token_id()
    row.expires_at = now + lifetime
    return row.refresh_jti
