"""More than one machine: two app servers and two queue workers on one PostgreSQL and one Redis.

Every event of a subscription's life (Stripe's documented payloads) is delivered twice, shuffled, half of the
deliveries to each server, concurrently. Each event is processed once, no audit entry is written twice, and
every queued mail reaches SMTP once, whichever worker took it — with the events applied in the requests
(WEBHOOK_APPLY=request) or by the workers (queue: the deliveries enqueue a drain per lane, again once a drain has
started, and both workers' drains claim events at once, each passing over the rows the other holds: SKIP LOCKED).
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from redis import Redis
from rq import Queue

from app.extensions import QUEUE_NAME, db
from app.models import AuditLog, MailOutbox, StripeEvent
from app.services.catalog import seed_plans_from_config
from tests.factories import UserFactory
from tests.queue.test_worker import ROOT, free_port, start_worker, wait_for
from tests.webhooks.signing import sign
from tests.webhooks.test_stripe_docs_events import CUSTOMER, DOCS_PRICE, load

SECRET = "whsec_two_hosts_" + "a" * 16
EVENTS = [
    "customer.subscription.created",
    "checkout.session.completed",
    "invoice.payment_succeeded",
    "invoice.paid",
    "customer.updated",
    "customer.subscription.updated",
    "invoice.payment_failed",
    "customer.subscription.deleted",
]


def start_server(database_url: str, redis_url: str, stripe_url: str, port: int, apply: str) -> subprocess.Popen:
    """An app server as a process of its own (another host, as far as the app can tell), applying events as
    `apply` (WEBHOOK_APPLY) says."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_QUEUE_URL": redis_url,
        "WEBHOOK_APPLY": apply,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_PRICE_PRO_MONTHLY": DOCS_PRICE,
        "STRIPE_API_BASE": stripe_url,
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "run", "--port", str(port), "--without-threads"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def deliver(url: str, event: dict) -> tuple[int, str]:
    """The answer's status code and, for a 200, its `status` (processed, duplicate, queued, …)."""
    body = json.dumps(event).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)["status"]
    except urllib.error.HTTPError as error:
        return error.code, ""


#: What a delivery answers, by WEBHOOK_APPLY: applied here or found applied; recorded for a worker or found applied.
ANSWERS = {"request": {"processed", "ignored", "duplicate"}, "queue": {"queued", "duplicate"}}


@pytest.mark.parametrize("apply", ["request", "queue"])
def test_two_servers_two_workers_process_each_event_once(
    app, migrated_database, redis_url, smtp_sink, stripe_emulator, apply
):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        user_id = UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER).id
    ports = [free_port(), free_port()]
    processes = [start_server(migrated_database, redis_url, stripe_emulator.url, port, apply) for port in ports]
    # The workers run the app as the servers do (in queue mode they apply the events: a failed payment reads Stripe).
    settings = {"STRIPE_API_BASE": stripe_emulator.url, "STRIPE_PRICE_PRO_MONTHLY": DOCS_PRICE}
    processes += [start_worker(migrated_database, redis_url, smtp_sink.port, **settings) for _ in range(2)]
    try:
        assert all(wait_for(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"), 60) for port in ports)
        deliveries = [load(name, user_id) for name in EVENTS] * 2
        random.Random(16).shuffle(deliveries)
        urls = [f"http://127.0.0.1:{ports[i % 2]}/api/v1/billing/webhooks/stripe" for i in range(len(deliveries))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(deliver, urls, deliveries))
        assert {code for code, _ in replies} == {200}, replies  # a concurrent duplicate waits for the first
        assert {status for _, status in replies} <= ANSWERS[apply], replies

        def applied_and_delivered() -> bool:  # the queue drained: every event applied, every mail sent
            with app.app_context():
                events = set(db.session.scalars(sa.select(StripeEvent.status)))
                rows = list(db.session.scalars(sa.select(MailOutbox.status)))
            delivered = bool(rows) and set(rows) == {"sent"} and len(smtp_sink.messages) == len(rows)
            return events <= {"processed", "ignored"} and delivered

        def state():  # what is not applied yet, and the outbox
            with app.app_context():
                waiting = sa.select(StripeEvent.type, StripeEvent.status, StripeEvent.error)
                events = db.session.execute(waiting.where(StripeEvent.status.not_in(("processed", "ignored")))).all()
                mails = db.session.execute(sa.select(MailOutbox.kind, MailOutbox.status, MailOutbox.error)).all()
            return events, mails, len(smtp_sink.messages)

        assert wait_for(applied_and_delivered, 60), state()
        queue = Queue(QUEUE_NAME, connection=Redis.from_url(redis_url))
        assert wait_for(lambda: queue.count == 0 and queue.started_job_registry.count == 0, 30)
        assert queue.failed_job_registry.count == 0
        with app.app_context():
            events = db.session.execute(sa.select(StripeEvent.id, StripeEvent.status, StripeEvent.attempts)).all()
            audits = db.session.execute(sa.select(AuditLog.action, AuditLog.details)).all()
            mails = list(db.session.scalars(sa.select(MailOutbox.dedupe_key)))
        assert len(events) == len(EVENTS)
        assert {(status, attempts) for _, status, attempts in events} <= {("processed", 1), ("ignored", 1)}
        repeated = [k for k, n in collections.Counter((a, repr(sorted(d.items()))) for a, d in audits).items() if n > 1]
        assert repeated == []
        assert len(mails) == len(set(mails)) == len(smtp_sink.messages)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
