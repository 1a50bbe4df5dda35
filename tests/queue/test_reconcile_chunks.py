"""The nightly reconcile on the real task queue (RQ on the test Redis, its SimpleWorker in-process) goes a chunk of
customers at a time: each chunk enqueues the next behind the jobs that came meanwhile, so a single worker is free for
webhook drains and mail between chunks instead of holding them for the whole sync."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from rq import SimpleWorker

from app.extensions import db, task_queue
from app.models import AuditLog, UserSubscription
from app.tasks import deliver_mail, reconcile_all
from tests.test_stripe_cli import paid_user

CUSTOMERS = 5


def drifted_customers(app, emulator) -> None:
    """CUSTOMERS users who paid in Stripe while no webhook reached the app: each copy has drifted."""
    for n in range(CUSTOMERS):
        paid_user(app, emulator, email=f"c{n}@example.com")


def active_subscriptions(app) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count(UserSubscription.id)).where(UserSubscription.status == "active")
        )


def repairs(app) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "reconcile.drift_repaired")
        )


@pytest.fixture
def queued(seeded, stripe_emulator, redis_url):
    """The app with the task queue on the test Redis, CUSTOMERS drifted customers and a reconcile in chunks of 2
    queued; yields the queue (in an app context)."""
    seeded.config["TASK_QUEUE_URL"] = redis_url
    drifted_customers(seeded, stripe_emulator)
    with seeded.app_context():
        queue = task_queue()
        queue.enqueue(reconcile_all, chunk=2)
        yield queue


def test_a_chunk_enqueues_the_rest_behind_the_jobs_that_came_meanwhile(seeded, queued):
    arrived = queued.enqueue(deliver_mail)  # a job that arrives while the first chunk runs
    worker = SimpleWorker([queued], connection=queued.connection)
    worker.work(burst=True, max_jobs=1, logging_level="WARNING")
    waiting = queued.get_jobs()  # the repairs' mail is queued too (one delivery job)
    assert waiting[0].id == arrived.id
    assert [job.func_name for job in waiting].count("app.tasks.reconcile_all") == 1
    assert waiting[-1].func_name == "app.tasks.reconcile_all" and waiting[-1].args == (2, 2, 2, 2)
    assert active_subscriptions(seeded) == 2

    worker.work(burst=True, logging_level="WARNING")
    assert queued.count == 0 and queued.failed_job_registry.count == 0
    assert active_subscriptions(seeded) == CUSTOMERS
    assert repairs(seeded) == CUSTOMERS


def test_the_last_chunk_returns_the_whole_runs_count(queued):
    SimpleWorker([queued], connection=queued.connection).work(burst=True, logging_level="WARNING")
    jobs = [queued.fetch_job(id) for id in queued.finished_job_registry.get_job_ids()]
    results = [job.return_value() for job in jobs if job.func_name == "app.tasks.reconcile_all"]
    assert sorted(results) == [2, 4, 5]  # drifted so far, chunk after chunk: 2, 2 + 2, 4 + 1


def test_run_by_hand_without_a_queue_it_goes_on_in_the_process(seeded, stripe_emulator):
    app = seeded
    drifted_customers(app, stripe_emulator)
    with app.app_context():
        assert task_queue() is None
        assert reconcile_all(chunk=2) == CUSTOMERS
    assert active_subscriptions(app) == CUSTOMERS
    with app.app_context():
        assert reconcile_all(chunk=2) == 0  # nothing drifted any more
