"""One mail-delivery job at a time, on the real task queue (RQ on the test Redis, its SimpleWorker in-process).

Every commit that queues mail sees that a delivery job will send it: the first sets `mail_delivery_pending` (SET NX)
and enqueues the job, the next ones find it waiting and enqueue none; the job deletes the flag before it reads the
outbox and sends every pending row, batch after batch. A commit after the job started enqueues another. An enqueue
that fails leaves no flag behind; a job failing on SMTP holds the flag until its retry, which sends what was
committed meanwhile.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from rq import SimpleWorker

from app import create_app
from app.extensions import QUEUE_NAME, db, task_queue
from app.models import MailOutbox, User
from app.services.mail import DELIVERY_PENDING_KEY, DELIVERY_PENDING_TTL, queue_mail, request_delivery
from app.services.signals import SyncResult, commit_billing
from tests.conftest import make_config
from tests.factories import UserFactory

DELIVER = "app.tasks.deliver_mail"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sink:
    """aiosmtpd handler: the recipients it received, and whether the flag was set as each mail arrived."""

    def __init__(self, redis_url: str):
        self.recipients: list[str] = []
        self.flag_set: list[bool] = []
        self.store = redis.Redis.from_url(redis_url)

    async def handle_DATA(self, server, session, envelope):
        self.flag_set.append(bool(self.store.exists(DELIVERY_PENDING_KEY)))
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def smtp_port():
    return free_port()


@pytest.fixture
def queued_app(app, migrated_database, redis_url, smtp_port):
    """The test app with the task queue on the cache's Redis (as in the deployment guide), SMTP on `smtp_port`."""
    return create_app(
        make_config(
            migrated_database, redis_url, TASK_QUEUE_URL=redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp_port)
        )
    )


@pytest.fixture
def sink(redis_url, smtp_port):
    handler = Sink(redis_url)
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield handler
    controller.stop()


def commit_mails(app, count: int, prefix: str = "m") -> None:
    """`count` billing commits in a row, each queuing one mail (as the webhook drain applies events)."""
    with app.test_request_context("/"):
        user = db.session.scalar(sa.select(User).where(User.email == "q@example.com")) or UserFactory(
            email="q@example.com"
        )
        for n in range(count):
            queue_mail("subscription_ended", f"{prefix}{n}:ended", user, plan="Pro")
            commit_billing(SyncResult(user.id, mail_queued=True))


def queued(app) -> list[str]:
    with app.app_context():
        return [job.func_name for job in task_queue().get_jobs()]


def work(app, with_scheduler: bool = False) -> None:
    with app.app_context():
        queue = task_queue()
        SimpleWorker([queue], connection=queue.connection).work(
            burst=True, with_scheduler=with_scheduler, logging_level="WARNING"
        )


def statuses(app) -> dict[str, int]:
    with app.app_context():
        return dict(db.session.execute(sa.select(MailOutbox.status, sa.func.count()).group_by(MailOutbox.status)).all())


def test_mail_commits_in_a_row_leave_one_job_that_sends_every_row(queued_app, sink, redis_url):
    commit_mails(queued_app, 60)  # more than one batch (50)
    assert queued(queued_app) == [DELIVER]
    store = redis.Redis.from_url(redis_url)
    assert 0 < store.ttl(DELIVERY_PENDING_KEY) <= DELIVERY_PENDING_TTL
    work(queued_app)
    assert statuses(queued_app) == {"sent": 60}
    assert len(sink.recipients) == 60
    assert sink.flag_set == [False] * 60  # deleted before the job read the outbox
    assert queued(queued_app) == []
    # A commit after the job started (its flag deleted) enqueues a new one, which sends it.
    commit_mails(queued_app, 2, prefix="later")
    assert queued(queued_app) == [DELIVER]
    work(queued_app)
    assert statuses(queued_app) == {"sent": 62}


def test_request_delivery_enqueues_one_job_while_one_waits(queued_app, sink):
    """The path of the mails queued outside a billing commit (accounts, alerts)."""
    with queued_app.test_request_context("/"):
        for _ in range(5):
            request_delivery()
    assert queued(queued_app) == [DELIVER]
    work(queued_app)
    with queued_app.test_request_context("/"):
        request_delivery()
    assert queued(queued_app) == [DELIVER]


@pytest.mark.parametrize("path", ["commit", "request_delivery"])
def test_an_enqueue_that_fails_leaves_no_flag(queued_app, redis_url, caplog, path):
    """The flag's SET NX succeeds, the job's enqueue fails (the queue's list is not a list): the flag is deleted, so
    the next commit tries again rather than wait for it to expire; the rows wait in the outbox meanwhile."""
    store = redis.Redis.from_url(redis_url)
    store.set(f"rq:queue:{QUEUE_NAME}", "not a list")
    with caplog.at_level("WARNING"):
        if path == "commit":
            commit_mails(queued_app, 1)
        else:
            with queued_app.test_request_context("/"):
                request_delivery()
    assert any("mail_enqueue_failed" in record.getMessage() for record in caplog.records)
    assert not store.exists(DELIVERY_PENDING_KEY)
    store.delete(f"rq:queue:{QUEUE_NAME}")
    commit_mails(queued_app, 1, prefix="again")
    assert queued(queued_app) == [DELIVER]


def test_a_mail_committed_while_the_job_waits_for_its_retry_goes_with_the_retry(queued_app, redis_url, smtp_port):
    """SMTP down: the job fails and waits for its retry (10 s), holding the flag until then, so a mail committed
    meanwhile enqueues no job of its own; once SMTP is back, the retry sends both: the one that failed is due again
    as the retry comes (its own backoff's first step is the retry's 10 s)."""
    commit_mails(queued_app, 1, prefix="first")
    work(queued_app)  # SMTP down: fails, its retry scheduled
    store = redis.Redis.from_url(redis_url)
    with queued_app.app_context():
        queue = task_queue()
        scheduled = queue.scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1 and statuses(queued_app) == {"pending": 1}
    assert 0 < store.ttl(DELIVERY_PENDING_KEY) <= 10
    commit_mails(queued_app, 1, prefix="second")
    assert queued(queued_app) == []  # the retry will send it
    handler = Sink(redis_url)
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with queued_app.app_context():
            (next_attempt,) = db.session.scalars(sa.select(MailOutbox.next_attempt_at).where(MailOutbox.attempts == 1))
            retry_at = queue.scheduled_job_registry.get_scheduled_time(queue.fetch_job(scheduled[0]))
            # RQ keeps the retry's time to the whole second: it may come up to a second before the mail is due.
            assert (next_attempt - retry_at).total_seconds() < 1, (next_attempt, retry_at)
            # 10 s later, as RQ may run it: the failed mail is due within the second (`DUE_LEEWAY` takes it).
            db.session.execute(sa.update(MailOutbox).values(next_attempt_at=datetime.now(UTC) + timedelta(seconds=1)))
            db.session.commit()
            queue = task_queue()
            queue.scheduled_job_registry.schedule(queue.fetch_job(scheduled[0]), datetime.now(UTC))
        work(queued_app, with_scheduler=True)
    finally:
        controller.stop()
    assert statuses(queued_app) == {"sent": 2}
    assert len(handler.recipients) == 2
    assert not store.exists(DELIVERY_PENDING_KEY)
