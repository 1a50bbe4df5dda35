"""The evaluation as the task queue runs it: real `flask queue worker` processes, RQ on the test Redis.

The same evaluation is enqueued twice and two workers take the jobs at once: one signal is recorded, one mail is
queued and delivered (by the delivery job the evaluation itself enqueued), over real SMTP.
"""

from __future__ import annotations

from app import create_app
from app.extensions import task_queue
from tests.alerts.conftest import BUY_DAY, outbox_kinds, received, signals, watch
from tests.conftest import make_config
from tests.queue.test_worker import start_worker


def test_two_workers_running_the_evaluation_record_one_signal_and_send_one_mail(
    on_plan, migrated_database, redis_url, smtp_sink
):
    user = on_plan("pro", realtime=True)
    strategy = watch(user.app, user.id)
    queued = create_app(make_config(migrated_database, redis_url, TASK_QUEUE_URL=redis_url))
    with queued.app_context():
        queue = task_queue()
        assert queue is not None
        for _ in range(2):
            queue.enqueue("app.tasks.evaluate_alerts", BUY_DAY, job_timeout=120)
    workers = [start_worker(migrated_database, redis_url, smtp_sink.port, "worker", "--burst") for _ in range(2)]
    for worker in workers:
        _, errors = worker.communicate(timeout=120)
        assert worker.returncode == 0, errors
    assert signals(user.app) == [(strategy, BUY_DAY, "buy", "realtime", True)]
    assert outbox_kinds(user.app) == [("alert_signal", "sent")]
    assert [m["Subject"] for m in received(smtp_sink, "trader@example.com")] == ["Buy signal: Momentum on 17 Dec 2025"]
    with queued.app_context():
        assert task_queue().failed_job_registry.count == 0
