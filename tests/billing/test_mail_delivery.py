"""The outbox's delivery against a real SMTP server (aiosmtpd) that refuses some addresses for good: a refused
address is not tried again, and mails that keep failing never hold newer ones back."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app import create_app
from app.extensions import db
from app.models import MailOutbox
from app.services.mail import Delivery, deliver_batch, queue_mail
from tests.conftest import make_config
from tests.factories import UserFactory


class Refusing:
    """Takes mail for every address but those at refused.example, which it refuses for good (550)."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered.extend(envelope.rcpt_tos)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    handler = Refusing()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def mail_app(seeded, migrated_database, redis_url, smtp):
    controller, _ = smtp
    return create_app(
        make_config(migrated_database, redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(controller.port))
    )


def outbox(app) -> list[tuple[str, str, int]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(MailOutbox.recipient, MailOutbox.status, MailOutbox.attempts).order_by(MailOutbox.id)
        )
        return [tuple(row) for row in rows]


def queue(app, *addresses: str) -> None:
    with app.test_request_context("/"):
        for n, address in enumerate(addresses):
            user = UserFactory(email=address)
            queue_mail("subscription_ended", f"sub_{n}_{address}:ended", user, plan="Pro")
        db.session.commit()


def test_an_address_refused_for_good_is_not_tried_again(mail_app, smtp):
    _, handler = smtp
    queue(mail_app, "gone@refused.example", "ada@example.com")
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=1, failed=1)
        assert deliver_batch() == Delivery(sent=0, failed=0)  # nothing left to try
    assert outbox(mail_app) == [("gone@refused.example", "failed", 1), ("ada@example.com", "sent", 1)]
    assert handler.delivered == ["ada@example.com"]


def test_mails_that_keep_failing_do_not_hold_newer_ones_back(mail_app, smtp):
    """Three mails tried twice already (say SMTP refused them while it was misconfigured), then a new one: a batch
    of one sends the new one first."""
    _, handler = smtp
    queue(mail_app, "old1@example.com", "old2@example.com", "old3@example.com", "new@example.com")
    with mail_app.app_context():
        db.session.execute(sa.update(MailOutbox).where(MailOutbox.recipient.like("old%")).values(attempts=2))
        db.session.commit()
        assert deliver_batch(limit=1) == Delivery(sent=1, failed=0)
    assert handler.delivered == ["new@example.com"]
