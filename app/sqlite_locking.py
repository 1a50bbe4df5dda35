"""SQLite, the fresh-clone default, has no row locks: `SELECT … FOR UPDATE` locks nothing there, so the success
page and the webhook reporting the same payment could both insert the subscription (one of them then failing on
the unique key), and both audit the same transition.

On SQLite a session takes one process-wide lock before its transaction's first write or FOR UPDATE and keeps it
until that transaction ends, so the development server's threads take turns on writes as PostgreSQL's row locks
make concurrent requests take turns per user. Taken before SQLite's own write lock, never after it, so the two
cannot deadlock. Other databases are untouched.
"""

from __future__ import annotations

import threading

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql.elements import TextClause

_LOCK = threading.RLock()
_HELD, _SQLITE = "sqlite_write_lock_held", "sqlite_write_lock_applies"


def _take(session: Session) -> None:
    if session.info.get(_HELD):
        return
    applies = session.info.get(_SQLITE)
    if applies is None:  # asked once per session
        applies = session.info[_SQLITE] = session.get_bind().dialect.name == "sqlite"
    if applies:
        _LOCK.acquire()
        session.info[_HELD] = True


@event.listens_for(Session, "do_orm_execute")
def _before_write_or_for_update(state: ORMExecuteState) -> None:
    if (
        state.is_insert
        or state.is_update
        or state.is_delete
        or (state.is_select and getattr(state.statement, "_for_update_arg", None) is not None)
        or _writes_text(state.statement)
    ):
        _take(state.session)


def _writes_text(statement: object) -> bool:
    """A statement written out as text (`text("INSERT …")`) that is not a plain read: SQLAlchemy cannot tell what
    it does, so anything but SELECT counts as a write."""
    return isinstance(statement, TextClause) and not statement.text.lstrip()[:6].upper().startswith("SELECT")


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _flush_context, _instances) -> None:
    _take(session)


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and session.info.pop(_HELD, False):
        _LOCK.release()
