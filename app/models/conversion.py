"""Who converted, one row per user: the admin dashboard counts converted users here instead of running distinct
counts over the whole audit trail.

A row holds, per conversion path, when the user first made that move according to the audit trail:

- `free_starter_at`: first `subscription.activated` with plan "starter" (Free → Starter);
- `free_pro_at`: first `subscription.activated` with plan "pro" (Free → Pro);
- `starter_pro_at`: first `subscription.plan_changed` from "starter" to "pro" (Starter → Pro);
- `reached_starter_at`: first `subscription.activated` or `subscription.plan_changed` onto "starter" (who could
  make the Starter → Pro move).

So `count(free_starter_at)` is exactly `count(DISTINCT user_id)` of the matching audit entries, and so on. The row
is upserted by the flush that inserts such an audit entry (the listener below, so `audit.record()` and any other
way of adding an AuditLog keep it in step, in the same transaction); migration 0006 backfilled it. The audit
trail's user_id is SET NULL when a user is deleted, which drops the user from the distinct counts: the row here
is deleted with the user (ON DELETE CASCADE), so the counts agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, case, event, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import Model
from app.models.audit import AuditLog
from app.models.base import UTCDateTime, utcnow

#: The columns, each with the audit entries that set it: (action, from_plan or None for any, plan).
CONVERSION_COLUMNS = {
    "free_starter_at": (("subscription.activated", None, "starter"),),
    "free_pro_at": (("subscription.activated", None, "pro"),),
    "starter_pro_at": (("subscription.plan_changed", "starter", "pro"),),
    "reached_starter_at": (("subscription.activated", None, "starter"), ("subscription.plan_changed", None, "starter")),
}
CONVERSION_ACTIONS = ("subscription.activated", "subscription.plan_changed")


class UserConversion(Model):
    __tablename__ = "user_conversions"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    free_starter_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    free_pro_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    starter_pro_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reached_starter_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<UserConversion user={self.user_id}>"


def conversion_columns(action: str, details: dict[str, Any] | None) -> list[str]:
    """The columns an audit entry sets (none for most entries)."""
    if action not in CONVERSION_ACTIONS or not isinstance(details, dict):
        return []
    plan, from_plan = details.get("plan"), details.get("from_plan")
    return [
        column
        for column, moves in CONVERSION_COLUMNS.items()
        if any(action == a and plan == p and (f is None or from_plan == f) for a, f, p in moves)
    ]


def upsert_statement(dialect_name: str, user_id: int, at: datetime, columns: list[str]) -> Any:
    """INSERT the user's row with `at` in `columns`, or keep the earlier of the stored time and `at` in each."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    table = UserConversion.__table__
    insert = dialect.insert(table).values(user_id=user_id, **{column: at for column in columns})
    return insert.on_conflict_do_update(
        index_elements=[table.c.user_id],
        set_={
            column: case(
                (or_(table.c[column].is_(None), insert.excluded[column] < table.c[column]), insert.excluded[column]),
                else_=table.c[column],
            )
            for column in columns
        },
    )


@event.listens_for(AuditLog, "after_insert")
def _track_conversion(_mapper, connection, entry: AuditLog) -> None:
    """Same flush, same transaction as the audit entry: its user's conversion row follows."""
    if entry.user_id is None:
        return
    columns = conversion_columns(entry.action, entry.details)
    if columns:
        connection.execute(
            upsert_statement(connection.dialect.name, entry.user_id, entry.created_at or utcnow(), columns)
        )
