"""A mail server that accepts connections and never answers (a "tarpit": a plain socket server) holds a delivery for
about MAIL_TIMEOUT, not until something kills it: the mail stays pending for the retry, the rest of the batch is left
untried, and the worker (or, without a queue, the web process) is free again. RQ's own job timeout, when it strikes
first, goes on to RQ and is never recorded as the mail's error.

Before MAIL_TIMEOUT, Flask-Mail's `smtplib.SMTP(host, port)` had no timeout: a delivery job held its worker until
RQ's 120 s job timeout, which `deliver_batch` then caught and recorded as the mail's error; without a queue the web
process that delivered after its response hung until gunicorn killed it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from rq import SimpleWorker

from app import create_app
from app.extensions import db, task_queue
from app.models import MailOutbox
from app.services.mail import DELIVER_TASK, deliver_pending, queue_mail
from app.services.signals import SyncResult, commit_billing
from tests.conftest import make_config
from tests.factories import UserFactory
from tests.queue.test_worker import start_worker as start_queue_process
from tests.queue.test_worker import wait_for as wait_until

ROOT = Path(__file__).resolve().parents[2]
KIND = "subscription_ended"


class Tarpit:
    """Accepts every connection and never says a word (not even SMTP's greeting), until stopped."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # stopped
                return
            self.connections.append(connection)

    def stop(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)
        for connection in self.connections:
            connection.close()


@pytest.fixture
def tarpit():
    server = Tarpit()
    yield server
    server.stop()


@pytest.fixture
def hung_mail_app(app, migrated_database, redis_url, tarpit):
    """The test app with its mail server the tarpit, MAIL_TIMEOUT 1 s, the task queue on (for the job tests)."""
    mail_app = create_app(
        make_config(
            migrated_database,
            redis_url,
            TASK_QUEUE_URL=redis_url,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(tarpit.port),
            MAIL_TIMEOUT="1",
        )
    )
    yield mail_app
    with mail_app.app_context():
        db.session.remove()
        db.engine.dispose()


def queue_mails(app, *addresses: str) -> None:
    """Mails in the outbox, committed without asking for a delivery."""
    with app.test_request_context("/"):
        for address in addresses:
            queue_mail(KIND, f"{address}:ended", UserFactory(email=address), plan="Pro")
        db.session.commit()


def outbox(app) -> list[tuple[str, str, int, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(MailOutbox.recipient, MailOutbox.status, MailOutbox.attempts, MailOutbox.error).order_by(
                MailOutbox.id
            )
        )
        return [tuple(row) for row in rows]


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("mail_send_failures_total", {"kind": KIND, "reason": reason}) or 0.0


def test_without_a_queue_a_hung_server_holds_the_delivery_for_mail_timeout(hung_mail_app):
    """The queue-less path (the web process, after its response): `deliver_pending` returns after about
    MAIL_TIMEOUT, the first mail pending with its timeout, the other two untried, waiting for the next delivery."""
    hung_mail_app.config["TASK_QUEUE_URL"] = None
    queue_mails(hung_mail_app, "a@example.com", "b@example.com", "c@example.com")
    timeouts = failures("timeout")
    returned: list[int] = []

    def deliver() -> None:
        with hung_mail_app.app_context():
            returned.append(deliver_pending())

    started = time.monotonic()
    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    thread.join(10)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), "the delivery still waits on the silent server"
    assert returned == [0] and 0.9 < elapsed < 3, elapsed  # one MAIL_TIMEOUT, not one per mail
    (first, *rest) = outbox(hung_mail_app)
    assert first[:3] == ("a@example.com", "pending", 1) and "timed out" in first[3], first
    assert rest == [("b@example.com", "pending", 0, None), ("c@example.com", "pending", 0, None)]
    assert failures("timeout") == timeouts + 1


def test_rqs_job_timeout_goes_on_to_rq_and_the_mail_stays_pending(hung_mail_app):
    """MAIL_TIMEOUT longer than the job's own timeout (1 s here): RQ's JobTimeoutException interrupts the send. It is
    the job's failure (RQ records it), not the mail's: the row stays pending, no error recorded, for the retry."""
    hung_mail_app.config["MAIL_TIMEOUT"] = 30.0
    queue_mails(hung_mail_app, "slow@example.com")
    timeouts = failures("timeout")
    with hung_mail_app.app_context():
        queue = task_queue()
        job = queue.enqueue_call(DELIVER_TASK, timeout=1)
        started = time.monotonic()
        SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="ERROR")
        elapsed = time.monotonic() - started
        job.refresh()
        result = job.latest_result()
        assert job.is_failed and result is not None
        assert "JobTimeoutException" in (result.exc_string or ""), result.exc_string
        assert "MailNotDelivered" not in (result.exc_string or "")
    assert elapsed < 5
    assert outbox(hung_mail_app) == [("slow@example.com", "pending", 1, None)]
    assert failures("timeout") == timeouts + 1


def start_worker(database_url: str, redis_url: str, mail_port: int) -> subprocess.Popen:
    """`flask queue worker` as operators run it (tests/queue/test_worker.py), MAIL_TIMEOUT 1 s."""
    return start_queue_process(database_url, redis_url, mail_port, MAIL_TIMEOUT="1")


def wait_for(condition, seconds: float) -> bool:
    return wait_until(condition, seconds, every=0.1)


def test_the_worker_is_free_again_about_mail_timeout_after_a_hung_server(
    hung_mail_app, migrated_database, redis_url, tarpit
):
    """The real worker process: the delivery job the commit enqueues fails after about MAIL_TIMEOUT (its retry
    scheduled, the mail pending), and the job queued behind it runs at once — not after RQ's 120 s job timeout."""
    worker = start_worker(migrated_database, redis_url, tarpit.port)
    try:
        with hung_mail_app.app_context():
            queue = task_queue()
            warm = queue.enqueue("app.tasks.replay_failed_events")  # the worker is up once it has run this
        assert wait_for(lambda: warm.get_status(refresh=True) == "finished", 30), worker.stderr
        with hung_mail_app.test_request_context("/billing"):
            user = UserFactory(email="hung@example.com")
            queue_mail(KIND, "sub_hung:ended", user, plan="Pro")
            commit_billing(SyncResult(user.id, mail_queued=True))  # enqueues the delivery job
            started = time.monotonic()
            behind = task_queue().enqueue("app.tasks.replay_failed_events")
        assert wait_for(lambda: behind.get_status(refresh=True) == "finished", 15)
        waited = time.monotonic() - started
        assert waited < 5, waited  # MAIL_TIMEOUT (1 s) and the jobs' own work
        with hung_mail_app.app_context():  # the delivery job failed, its retry waiting out the backoff
            queue = task_queue()
            scheduled = [queue.fetch_job(job_id) for job_id in queue.scheduled_job_registry.get_job_ids()]
            assert [job.func_name for job in scheduled] == [DELIVER_TASK]
        ((recipient, status, attempts, error),) = outbox(hung_mail_app)
        assert (recipient, status, attempts) == ("hung@example.com", "pending", 1) and "timed out" in error
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:  # still held by the silent server (as before MAIL_TIMEOUT)
            worker.kill()
            worker.wait(10)
