"""The evaluation as the task queue runs it: real `flask queue worker` processes, RQ on the test Redis.

The same evaluation is enqueued twice and two workers take the jobs at once: one signal is recorded, one mail is
queued and delivered (by the delivery job the evaluation itself enqueued), over real SMTP.
"""

from __future__ import annotations

import os
import subprocess
import sys

from app import create_app
from app.extensions import task_queue
from tests.alerts.conftest import BUY_DAY, outbox_kinds, received, signals, watch
from tests.conftest import make_config
from tests.queue.test_worker import ROOT


def burst_worker(database_url: str, redis_url: str, mail_port: int) -> subprocess.Popen:
    """`flask queue worker --burst`: runs what is queued, then exits."""
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
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "queue", "worker", "--burst"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


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
    workers = [burst_worker(migrated_database, redis_url, smtp_sink.port) for _ in range(2)]
    for worker in workers:
        _, errors = worker.communicate(timeout=120)
        assert worker.returncode == 0, errors
    assert signals(user.app) == [(strategy, BUY_DAY, "buy", "realtime", True)]
    assert outbox_kinds(user.app) == [("alert_signal", "sent")]
    assert [m["Subject"] for m in received(smtp_sink, "trader@example.com")] == ["Buy signal: Momentum on 17 Dec 2025"]
    with queued.app_context():
        assert task_queue().failed_job_registry.count == 0
