"""The real task queue: `flask queue worker` and `flask queue cron` processes, RQ on the test Redis.

SMTP down at first: the request that queues the mail returns without touching SMTP, the worker's job fails and is
retried after its backoff, and once SMTP is up the mail is delivered, once. The scheduler alone (nothing enqueued
by the app) sweeps the outbox and replays a failed event whose backoff has passed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app import create_app
from app.extensions import db, task_queue
from app.models import MailOutbox, StripeEvent, utcnow
from app.services.mail import queue_mail
from app.services.metrics import render_metrics
from app.services.queue_health import queue_health
from app.services.signals import SyncResult, commit_billing
from tests.conftest import make_config
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_worker(
    database_url: str, redis_url: str, mail_port: int, command: str = "worker", *options: str, **settings: str
) -> subprocess.Popen:
    """`flask queue worker` (or `cron`, and any options such as `--burst`) as operators run it, configured by the
    environment (with `settings` on top: those of the app servers a worker applies webhook events for)."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_QUEUE_URL": redis_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(mail_port),
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "queue", command, *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for(condition, seconds: float, every: float = 0.2) -> bool:
    """Whether `condition()` came true within `seconds`, asked every `every` seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


@pytest.fixture
def queued_app(app, migrated_database, redis_url):
    """The test app with the task queue on (the suite's other apps deliver after the response)."""
    return create_app(
        make_config(
            migrated_database, redis_url, TASK_QUEUE_URL=redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(free_port())
        )
    )


class Received:
    """aiosmtpd handler keeping the recipients of what it receives."""

    def __init__(self):
        self.recipients: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


def outbox(app) -> list[tuple[str, int]]:
    with app.app_context():
        return [(row.status, row.attempts) for row in db.session.scalars(sa.select(MailOutbox))]


def test_smtp_down_loses_nothing_and_the_worker_retries(queued_app, migrated_database, redis_url):
    smtp_port = free_port()
    worker = start_worker(migrated_database, redis_url, smtp_port)
    sink = None
    try:
        with queued_app.test_request_context("/billing"):
            user = UserFactory(email="queued@example.com")
            queue_mail("subscription_ended", "sub_q:ended", user, plan="Pro")
            started = time.perf_counter()
            commit_billing(SyncResult(user.id, mail_queued=True))
            assert time.perf_counter() - started < 0.5  # enqueued, not sent: no SMTP in the request
            assert task_queue() is not None

        # SMTP is down: the worker tries, fails, keeps the mail pending and schedules a retry.
        assert wait_for(lambda: outbox(queued_app) == [("pending", 1)], 20), worker.stderr
        with queued_app.app_context():
            health = queue_health()
            assert health.configured and health.depth is not None and health.oldest_mail_seconds > 0
            scrape = render_metrics()[0].decode()
        assert "task_queue_depth " in scrape and "task_queue_failed_jobs " in scrape
        assert "mail_outbox_oldest_pending_seconds " in scrape

        received = Received()
        sink = Controller(received, hostname="127.0.0.1", port=smtp_port)
        sink.start()
        assert wait_for(lambda: outbox(queued_app) == [("sent", 2)], 30)
        assert received.recipients == ["queued@example.com"]
    finally:
        worker.terminate()
        worker.wait(10)
        if sink:
            sink.stop()


def test_the_scheduler_sweeps_the_outbox_and_replays_a_failed_event(app, migrated_database, redis_url, smtp_sink):
    with app.app_context():
        user = UserFactory(email="swept@example.com")
        with app.test_request_context("/"):
            queue_mail("subscription_ended", "sub_s:ended", user, plan="Pro")  # no delivery requested
        db.session.add(
            StripeEvent(
                id="evt_failed_once",
                type="customer.created",
                stripe_created=utcnow(),
                received_at=utcnow() - timedelta(hours=1),
                status="failed",
                attempts=1,
                error="OperationalError: the database restarted",
                payload={"id": "evt_failed_once", "type": "customer.created", "data": {"object": {}}},
            )
        )
        db.session.commit()
    processes = [
        start_worker(migrated_database, redis_url, smtp_sink.port),
        start_worker(migrated_database, redis_url, smtp_sink.port, "cron"),
    ]
    try:

        def event_status():
            with app.app_context():
                return db.session.get(StripeEvent, "evt_failed_once").status

        assert wait_for(lambda: outbox(app) == [("sent", 1)], 30), processes[1].stderr
        assert wait_for(lambda: event_status() == "ignored", 30)
        assert smtp_sink.subjects("swept@example.com") == ["Your Pro plan has ended"]
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
