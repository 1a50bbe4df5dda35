"""More than one machine: two app servers and two queue workers on one PostgreSQL and one Redis.

Every event of a subscription's life (Stripe's documented payloads) is delivered twice, shuffled, half of the
deliveries to each server, concurrently. Each event is processed once, no audit entry is written twice, and
every queued mail reaches SMTP once, whichever worker took it.
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

import sqlalchemy as sa

from app.extensions import db
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


def start_server(database_url: str, redis_url: str, stripe_url: str, port: int) -> subprocess.Popen:
    """An app server as a process of its own (another host, as far as the app can tell)."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_QUEUE_URL": redis_url,
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


def deliver(url: str, event: dict) -> int:
    body = json.dumps(event).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)},
    )
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code


def test_two_servers_two_workers_process_each_event_once(app, migrated_database, redis_url, smtp_sink, stripe_emulator):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        user_id = UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER).id
    ports = [free_port(), free_port()]
    processes = [start_server(migrated_database, redis_url, stripe_emulator.url, port) for port in ports]
    processes += [start_worker(migrated_database, redis_url, smtp_sink.port) for _ in range(2)]
    try:
        assert all(wait_for(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"), 60) for port in ports)
        deliveries = [load(name, user_id) for name in EVENTS] * 2
        random.Random(16).shuffle(deliveries)
        urls = [f"http://127.0.0.1:{ports[i % 2]}/api/v1/billing/webhooks/stripe" for i in range(len(deliveries))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(pool.map(deliver, urls, deliveries))
        assert set(statuses) == {200}, statuses  # a concurrent duplicate waits for the first, then finds it done

        def mail_delivered() -> bool:
            with app.app_context():
                rows = list(db.session.scalars(sa.select(MailOutbox.status)))
            return bool(rows) and set(rows) == {"sent"} and len(smtp_sink.messages) == len(rows)

        assert wait_for(mail_delivered, 60)
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
