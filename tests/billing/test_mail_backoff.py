"""Each outbox mail backs off on its own: a failed attempt sets its `next_attempt_at` (10 s, 30 s, 1 min, 5 min,
15 min, 1 h, then every 3 h), a delivery takes only the mails due, and the 14th failed attempt gives the mail up
(`failed`, logged and counted). Against a real SMTP server (aiosmtpd) answering `451` (try again later) and the
test PostgreSQL.

Before, the outbox kept no next-attempt time: every delivery (each job, each retry, the every-minute sweep) tried
every pending mail again, and two workers' batches running at once each tried the same failing mail (the `tried`
list is a batch's own): the first one's failure unlocked the row, and the second took it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask_migrate import upgrade
from prometheus_client import REGISTRY

from app import create_app
from app.extensions import db
from app.models import MAIL_KINDS, MailOutbox, utcnow
from app.services.mail import (
    MAIL_BACKOFF,
    MAIL_MAX_ATTEMPTS,
    MAIL_RETRY,
    SUBJECTS,
    Delivery,
    deliver_batch,
    next_attempt_delay,
    queue_mail,
)
from app.services.queue_health import MAIL_AGE_ALERT_SECONDS, queue_health
from tests.billing.test_mail_metrics import mail_app, mail_port  # noqa: F401 - fixtures
from tests.factories import UserFactory

KIND = "subscription_ended"


class Deferring:
    """Answers every recipient `451 4.3.0 Try again later` (a temporary refusal: the mail stays pending), after
    `delay` seconds, until `accepting` is set; counts the recipients it was asked for."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.accepting = False
        self.asked: list[str] = []
        self.delivered: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.asked.append(address)
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.accepting:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def deferring(mail_port):  # noqa: F811 - the fixtures imported above
    handler = Deferring()
    controller = Controller(handler, hostname="127.0.0.1", port=mail_port)
    controller.start()
    yield handler
    controller.stop()


def queue(app, *addresses: str) -> None:
    with app.test_request_context("/"):
        for address in addresses:
            queue_mail(KIND, f"{address}:ended", UserFactory(email=address), plan="Pro")
        db.session.commit()


def rows(app) -> list[MailOutbox]:
    with app.app_context():
        found = db.session.scalars(sa.select(MailOutbox).order_by(MailOutbox.id)).all()
        db.session.expunge_all()
        return list(found)


def make_due(app, **values) -> None:
    """Time passes: every mail's next attempt is due (and `values` set, such as an earlier `created_at`)."""
    with app.app_context():
        db.session.execute(sa.update(MailOutbox).values(next_attempt_at=utcnow() - timedelta(seconds=1), **values))
        db.session.commit()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": KIND, **labels}) or 0.0


def test_the_backoff_schedule():
    """10 s, 30 s, 1 min, 5 min, 15 min, 1 h (the delivery job's own retries, at the same times), then 3 h after each
    failed attempt; the 14th attempt, the last, 22 h 21 min 40 s after the first."""
    assert [next_attempt_delay(n) for n in range(1, 10)] == [
        timedelta(seconds=10),
        timedelta(seconds=30),
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=3),
        timedelta(hours=3),
        timedelta(hours=3),
    ]
    assert MAIL_BACKOFF[-1] == timedelta(hours=3) and MAIL_MAX_ATTEMPTS == 14
    assert MAIL_RETRY.intervals == [10, 30, 60, 300, 900, 3600] and MAIL_RETRY.max == 6
    last_attempt = sum((next_attempt_delay(n) for n in range(1, MAIL_MAX_ATTEMPTS)), timedelta())
    assert last_attempt == timedelta(hours=22, minutes=21, seconds=40)


def test_a_failed_mail_waits_for_its_next_attempt(mail_app, deferring):  # noqa: F811 - the fixtures imported above
    queue(mail_app, "ada@example.com")
    with mail_app.app_context():
        before = utcnow()
        assert deliver_batch() == Delivery(sent=0, failed=1)
        after = utcnow()
        # Not due yet: the next delivery (a job's retry, the sweep) neither tries it nor asks the mail server.
        assert deliver_batch() == Delivery(sent=0, failed=0)
    (row,) = rows(mail_app)
    assert (row.status, row.attempts) == ("pending", 1) and "451" in row.error
    assert before + timedelta(seconds=10) <= row.next_attempt_at <= after + timedelta(seconds=10)
    assert deferring.asked == ["ada@example.com"]

    make_due(mail_app)
    with mail_app.app_context():
        before = utcnow()
        assert deliver_batch() == Delivery(sent=0, failed=1)
        after = utcnow()
    (row,) = rows(mail_app)
    assert (row.status, row.attempts) == ("pending", 2)
    assert before + timedelta(seconds=30) <= row.next_attempt_at <= after + timedelta(seconds=30)

    deferring.accepting = True
    make_due(mail_app)
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=1, failed=0)
    (row,) = rows(mail_app)
    assert (row.status, row.attempts, row.error) == ("sent", 3, None)
    assert deferring.delivered == ["ada@example.com"]


def test_a_new_mail_is_sent_while_an_older_one_backs_off(mail_app, deferring):  # noqa: F811 - the fixtures imported above
    """The mail that failed waits; a mail committed after it is due at once (never tried: no next attempt set)."""
    queue(mail_app, "old@example.com")
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=1)
    deferring.accepting = True
    queue(mail_app, "new@example.com")
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=1, failed=0)
    assert [(row.recipient, row.status) for row in rows(mail_app)] == [
        ("old@example.com", "pending"),
        ("new@example.com", "sent"),
    ]


def test_the_last_attempt_failing_gives_the_mail_up_visibly(mail_app, deferring, caplog):  # noqa: F811 - the fixtures imported above
    """The 13th failed attempt leaves the mail pending; the 14th gives it up: `failed` with its last error, the
    `mail_given_up` log line and `mail_given_up_total` — and it no longer counts as a waiting mail."""
    queue(mail_app, "late@example.com")
    make_due(mail_app, attempts=MAIL_MAX_ATTEMPTS - 2, created_at=utcnow() - timedelta(hours=22))
    given_up, refused = sample("mail_given_up_total"), sample("mail_send_failures_total", reason="refused")
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=1)
        assert queue_health().oldest_mail_seconds > MAIL_AGE_ALERT_SECONDS  # still waiting: the alert's business
    (row,) = rows(mail_app)
    assert (row.status, row.attempts) == ("pending", MAIL_MAX_ATTEMPTS - 1)
    assert sample("mail_given_up_total") == given_up

    make_due(mail_app)
    with caplog.at_level(logging.WARNING), mail_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=1)
        assert deliver_batch() == Delivery(sent=0, failed=0)  # not tried again, however due
        assert queue_health().oldest_mail_seconds == 0
    (row,) = rows(mail_app)
    assert (row.status, row.attempts) == ("failed", MAIL_MAX_ATTEMPTS) and "451" in row.error
    assert sample("mail_given_up_total") == given_up + 1
    assert sample("mail_send_failures_total", reason="refused") == refused + 2
    logged = [r.getMessage() for r in caplog.records if "mail_given_up" in r.getMessage()]
    assert len(logged) == 1 and f"'attempts': {MAIL_MAX_ATTEMPTS}" in logged[0], logged
    assert len(deferring.asked) == 2


def test_the_oldest_waiting_mail_is_as_old_as_its_creation_while_it_backs_off(mail_app, deferring):  # noqa: F811 - the fixtures imported above
    """`flask doctor`'s "oldest waiting mail" and mail_outbox_oldest_pending_seconds count from `created_at`: a mail
    created 20 minutes ago, failing and backing off (its next attempt in the future), is 20 minutes old."""
    queue(mail_app, "stuck@example.com")
    with mail_app.app_context():
        db.session.execute(sa.update(MailOutbox).values(created_at=utcnow() - timedelta(minutes=20)))
        db.session.commit()
        assert deliver_batch() == Delivery(sent=0, failed=1)
        health = queue_health()
    (row,) = rows(mail_app)
    assert row.next_attempt_at > utcnow()
    assert 1200 <= health.oldest_mail_seconds < 1260 and not health.mail_ok
    line = health.lines()[0]
    assert line.startswith("✗ Task queue") and re.search(r"oldest waiting mail 12\d\d s", line), line


def test_two_workers_never_try_one_failing_mail_twice_in_a_run(mail_app, deferring):  # noqa: F811 - the fixtures imported above
    """Two batches at once (two threads, each its own session and SMTP connection), every mail failing after 0.2 s:
    each mail is tried once. Before, each batch, having tried its own rows, took the other's failed ones as soon as
    their rows were unlocked (still pending, not in its `tried` list): about twice as many attempts as mails."""
    deferring.delay = 0.2
    addresses = [f"m{n}@example.com" for n in range(8)]
    queue(mail_app, *addresses)
    start = threading.Barrier(2)
    deliveries: list[Delivery] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with mail_app.app_context():
                start.wait(10)
                deliveries.append(deliver_batch())
                db.session.remove()
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert all(delivery.failed > 0 for delivery in deliveries), deliveries  # both batches ran, side by side
    assert sum(delivery.failed for delivery in deliveries) == len(addresses)
    assert sorted(deferring.asked) == sorted(addresses)
    assert [(row.status, row.attempts) for row in rows(mail_app)] == [("pending", 1)] * len(addresses)


def test_every_kind_of_mail_is_a_mail_kind_and_has_its_counters():
    """The metrics label their counters with MAIL_KINDS: a kind missing there (scheduled_change_applied was) had no
    counter from 0 and was left out of every per-kind figure."""
    assert set(SUBJECTS) <= set(MAIL_KINDS), set(SUBJECTS) - set(MAIL_KINDS)
    assert len(MAIL_KINDS) == len(set(MAIL_KINDS))
    for kind in SUBJECTS:
        assert REGISTRY.get_sample_value("mail_sent_total", {"kind": kind}) is not None, kind
        assert REGISTRY.get_sample_value("mail_given_up_total", {"kind": kind}) is not None, kind
        for reason in ("refused", "timeout", "error"):
            assert REGISTRY.get_sample_value("mail_send_failures_total", {"kind": kind, "reason": reason}) is not None


def test_the_backoff_on_sqlite(tmp_path, stripe_emulator, deferring, mail_port):  # noqa: F811 - the fixtures imported above
    """The fresh-clone default (SQLite, migrated to head, no queue): a failed mail is not due again until its
    `next_attempt_at`, then it is."""
    sqlite_app = create_app(
        {
            "ENVIRONMENT": "development",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "STRIPE_API_BASE": stripe_emulator.url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(mail_port),
        }
    )
    with sqlite_app.app_context():
        upgrade()
    queue(sqlite_app, "lite@example.com")
    with sqlite_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=1)
        assert deliver_batch() == Delivery(sent=0, failed=0)
    (row,) = rows(sqlite_app)
    assert row.attempts == 1 and row.next_attempt_at > utcnow() + timedelta(seconds=5)
    deferring.accepting = True
    make_due(sqlite_app)
    with sqlite_app.app_context():
        assert deliver_batch() == Delivery(sent=1, failed=0)
        db.engine.dispose()
    assert deferring.delivered == ["lite@example.com"]
