"""A delivering process killed mid-batch (kill -9: out of memory, a host lost) sends again at most the one mail it
was sending: each mail is recorded as sent in a commit of its own as soon as the mail server takes it.

Before, `deliver_batch` marked the whole batch (up to 50) sent in one commit at its end: a process killed after two
of five mails were accepted left all five pending, and the next delivery sent all five again.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app import create_app
from app.extensions import db
from app.models import MailOutbox
from app.services.mail import deliver_pending, queue_mail
from tests.conftest import make_config
from tests.factories import UserFactory
from tests.queue.test_worker import wait_for as wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlowSink:
    """aiosmtpd handler of a slow mail server: it keeps each mail as its DATA arrives (a mail the server has, even if
    its sender never hears the 250), then answers after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.recipients: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.recipients.extend(envelope.rcpt_tos)
        await asyncio.sleep(self.delay)
        return "250 OK"


@pytest.fixture
def slow_sink():
    handler = SlowSink(delay=0.5)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture
def mail_app(app, migrated_database, redis_url, slow_sink):
    controller, _ = slow_sink
    mail_app = create_app(
        make_config(migrated_database, redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(controller.port))
    )
    yield mail_app
    with mail_app.app_context():
        db.session.remove()
        db.engine.dispose()


def start_delivery(database_url: str, redis_url: str, mail_port: int) -> subprocess.Popen:
    """`flask queue run deliver_mail`: the delivery job in a process of its own (no queue), as operators run it."""
    env = {
        **{name: value for name, value in os.environ.items() if name != "TASK_QUEUE_URL"},
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(mail_port),
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "queue", "run", "deliver_mail"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(condition, seconds: float) -> bool:
    return wait_until(condition, seconds, every=0.02)


def statuses(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(MailOutbox.status).order_by(MailOutbox.id)))


def test_a_delivery_killed_after_two_of_five_repeats_at_most_the_mail_in_flight(
    mail_app, migrated_database, redis_url, slow_sink
):
    controller, sink = slow_sink
    recipients = [f"batch{n}@example.com" for n in range(5)]
    with mail_app.test_request_context("/"):
        for address in recipients:
            queue_mail("subscription_ended", f"{address}:ended", UserFactory(email=address), plan="Pro")
        db.session.commit()

    process = start_delivery(migrated_database, redis_url, controller.port)
    try:
        # Two mails accepted (250 answered), the third's DATA in: kill -9 while the server holds its answer.
        assert wait_for(lambda: len(sink.recipients) == 3, 30), process.stderr
    finally:
        process.kill()
        process.wait(10)
    assert sink.recipients == recipients[:3]
    assert statuses(mail_app) == ["sent", "sent", "pending", "pending", "pending"]

    # Deliver again (the killed process's row lock goes once PostgreSQL sees its connection closed).
    def all_sent() -> bool:
        with mail_app.app_context():
            deliver_pending()
        return statuses(mail_app) == ["sent"] * 5

    assert wait_for(all_sent, 15)
    received = Counter(sink.recipients)
    assert set(received) == set(recipients)
    # The mail in flight at the kill, which the server had but never confirmed, is the only one sent twice.
    assert [address for address, count in received.items() if count > 1] == [recipients[2]]
    assert received[recipients[2]] == 2
