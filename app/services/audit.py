"""The audit trail: one row per change that matters, in the caller's transaction."""

from __future__ import annotations

from typing import Any

from app.extensions import db
from app.models import AuditLog


def record(action: str, user_id: int | None, **details: Any) -> AuditLog:
    """Add an audit entry to the current transaction (the caller commits).

    A `subscription.activated` / `subscription.plan_changed` entry also upserts its user's `user_conversions` row
    in the same flush (app/models/conversion.py: a listener on AuditLog inserts, so rows added any other way
    follow too)."""
    entry = AuditLog(user_id=user_id, action=action, details=details)
    db.session.add(entry)
    return entry
