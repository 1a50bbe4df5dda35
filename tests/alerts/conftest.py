"""Alert fixtures: members on a plan with watched strategies, the outbox and the SMTP sink read back.

Known bars of the bundled series for the rules fast=5 slow=20: a buy on 2025-12-17, a sell on 2025-12-18, nothing on
2025-12-16.
"""

from __future__ import annotations

import email
from datetime import date
from email.message import Message

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AlertSettings, AlertSignal, AlertWatch, MailOutbox, Strategy
from tests.entitlements.conftest import Member

RULES = "fast=5 slow=20"
BUY_DAY, SELL_DAY, QUIET_DAY = date(2025, 12, 17), date(2025, 12, 18), date(2025, 12, 16)


def watch(app, user_id: int, name: str = "Momentum", rules: str = RULES) -> int:
    """A strategy of the user's, watched (written directly: the page's buttons have tests of their own)."""
    with app.app_context():
        strategy = Strategy(user_id=user_id, name=name, rules=rules)
        db.session.add(strategy)
        db.session.flush()
        db.session.add(AlertWatch(strategy_id=strategy.id, user_id=user_id))
        db.session.commit()
        return strategy.id


def switches(app, user_id: int, email_enabled: bool = True, realtime_enabled: bool = False) -> None:
    with app.app_context():
        settings = db.session.get(AlertSettings, user_id) or AlertSettings(user_id=user_id)
        settings.email_enabled, settings.realtime_enabled = email_enabled, realtime_enabled
        db.session.add(settings)
        db.session.commit()


def signals(app) -> list[tuple[int, date, str, str, bool]]:
    """(strategy, bar, side, delivery, mailed) of every recorded signal."""
    with app.app_context():
        rows = db.session.scalars(sa.select(AlertSignal).order_by(AlertSignal.id))
        return [(s.strategy_id, s.bar_date, s.side, s.delivery, s.mailed_at is not None) for s in rows]


def outbox_kinds(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [(m.kind, m.status) for m in db.session.scalars(sa.select(MailOutbox).order_by(MailOutbox.id))]


def received(sink, to: str) -> list[Message]:
    """The mails the SMTP sink received for `to`, parsed."""
    return [email.message_from_string(m["data"]) for m in sink.messages if to in m["to"]]


def parts(message: Message) -> dict[str, str]:
    """The text and HTML parts of a multipart mail, by content type."""
    return {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() in ("text/plain", "text/html")
    }


@pytest.fixture
def on_plan(seeded, client, auth):
    """`on_plan("pro", realtime=True)`: a member logged in on `client`, with email alerts on (one per test)."""

    def make(plan: str, email_enabled: bool = True, realtime: bool = False, email: str = "trader@example.com"):
        user = Member(seeded, client, auth, email, plan)
        switches(user.app, user.id, email_enabled, realtime)
        return user

    return make
