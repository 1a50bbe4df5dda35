"""The real `flask queue cron` beside Redis as operators meet it: restarted under it, a second cron started on another
host, and the trace it leaves (heartbeat, each scheduled job's last success) in `flask queue status`, `flask doctor`
and /metrics.

A Redis restart used to end the cron for good (RQ's CronScheduler registers its death at the first Redis error): no
more mail sweep, replay or nightly sync while every other check said ✓. Two crons enqueued every job twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue

from app.extensions import QUEUE_NAME
from app.services.doctor import check_task_queue
from app.services.metrics import render_metrics
from app.services.queue_health import (
    CRON_HEARTBEAT_KEY,
    CRON_LOCK_KEY,
    SCHEDULED_JOBS_KEY,
    record_job_success,
)
from tests.queue.test_worker import ROOT, queued_app, start_worker, wait_for  # noqa: F401 - queued_app: a fixture
from tests.reliability.conftest import Services


@pytest.fixture
def services(database_url, redis_url):
    """The suite's PostgreSQL and Redis (tests/reliability's helper); Redis runs again when the test ends. The
    fixture's name marks the test `stops_services`: it runs alone, on servers of its own (tests/conftest.py)."""
    found = Services(database_url, redis_url)
    if not found.available:
        pytest.skip("needs TEST_PG_BIN/TEST_PG_DATA/TEST_SERVICES_DIR/TEST_REDIS_PORT (run with `make test`)")
    yield found
    found.start_redis()


def start_cron(database_url: str, redis_url: str, log: Path, *options: str) -> subprocess.Popen:
    """`flask queue cron` as operators run it, its log (INFO) in `log`."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_QUEUE_URL": redis_url,
        "LOG_LEVEL": "INFO",
    }
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "queue", "cron", *options],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def enqueued(redis_url: str) -> list[str]:
    """The names of the jobs waiting on the queue, in order (no worker takes them in these tests)."""
    connection = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
    try:
        return [job.func_name.rsplit(".", 1)[1] for job in Queue(QUEUE_NAME, connection=connection).jobs]
    except redis.RedisError:
        return []


def test_the_cron_outlives_a_redis_restart_and_enqueues_its_next_job(
    app, migrated_database, redis_url, services, tmp_path
):
    log = tmp_path / "cron.log"
    cron = start_cron(migrated_database, redis_url, log)
    try:
        # At its start the cron enqueues the jobs of an interval (deliver_mail every 60 s, replay_failed_events).
        assert wait_for(lambda: "deliver_mail" in enqueued(redis_url), 30), log.read_text()
        first = time.monotonic()
        # Redis goes away over the time the next deliver_mail is due, and comes back empty (no persistence).
        time.sleep(max(0.0, 56 - (time.monotonic() - first)))
        services.stop_redis()
        time.sleep(5)
        assert cron.poll() is None, log.read_text()
        services.start_redis()

        assert wait_for(lambda: "deliver_mail" in enqueued(redis_url), 40), log.read_text()
        assert cron.poll() is None, log.read_text()
        connection = services.redis()
        assert connection.get(CRON_LOCK_KEY) is not None  # active again on the fresh Redis
        assert connection.hget(CRON_HEARTBEAT_KEY, "at") is not None
        text = log.read_text()
        # One line per attempt, no traceback storm.
        attempts = [line for line in text.splitlines() if "queue_cron_redis_unreachable" in line]
        assert 1 <= len(attempts) <= 6, text
        assert "Traceback" not in text, text
        assert "queue_cron_redis_back" in text, text
    finally:
        stop(cron)


def test_a_second_cron_waits_as_standby_and_takes_over_when_the_first_dies(app, migrated_database, redis_url, tmp_path):
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_cron(migrated_database, redis_url, first_log, "--lock-seconds", "3")
    second = None
    try:
        assert wait_for(lambda: "queue_cron_active" in first_log.read_text(), 30), first_log.read_text()
        assert wait_for(lambda: sorted(enqueued(redis_url)) == ["deliver_mail", "replay_failed_events"], 10)
        second = start_cron(migrated_database, redis_url, second_log, "--lock-seconds", "3")
        assert wait_for(lambda: "queue_cron_standby" in second_log.read_text(), 30), second_log.read_text()
        time.sleep(3)  # the standby's loops: it enqueues nothing
        assert sorted(enqueued(redis_url)) == ["deliver_mail", "replay_failed_events"], second_log.read_text()
        connection = redis.Redis.from_url(redis_url)
        assert connection.hget(CRON_HEARTBEAT_KEY, "name").decode().endswith(f":{first.pid}")

        first.send_signal(signal.SIGKILL)  # dies without giving the lock up: it expires after --lock-seconds
        first.wait(10)
        assert wait_for(lambda: "queue_cron_active" in second_log.read_text(), 15), second_log.read_text()
        assert wait_for(lambda: enqueued(redis_url).count("deliver_mail") == 2, 10)  # the standby's own first run
        assert connection.hget(CRON_HEARTBEAT_KEY, "name").decode().endswith(f":{second.pid}")
        assert second.poll() is None
    finally:
        stop(first)
        if second is not None:
            stop(second)


def status_lines(app) -> list[str]:
    with app.app_context():  # as `flask` pushes it for every command
        result = app.test_cli_runner().invoke(args=["queue", "status"])
    assert result.exit_code == 0, result.exception
    return result.output.splitlines()


def test_status_doctor_and_metrics_show_the_workers_the_cron_and_each_jobs_last_success(
    queued_app,  # noqa: F811 - the fixture imported above
    migrated_database,
    redis_url,
    smtp_sink,
    tmp_path,
):
    worker = start_worker(migrated_database, redis_url, smtp_sink.port)
    cron = start_cron(migrated_database, redis_url, tmp_path / "cron.log")
    connection = redis.Redis.from_url(redis_url)
    try:
        # The worker runs the cron's first deliver_mail and replay_failed_events; each records its success.
        assert wait_for(lambda: connection.hlen(SCHEDULED_JOBS_KEY) == 2, 40), (tmp_path / "cron.log").read_text()
        lines = status_lines(queued_app)
        assert "✓ Workers: 1 alive" in lines, lines
        assert any(line.startswith("✓ Cron: ") and f":{cron.pid} active, heartbeat" in line for line in lines), lines
        assert any(line.startswith("✓ Scheduled job deliver_mail: last success ") for line in lines), lines
        assert "(every 60 s)" in "\n".join(lines)
        with queued_app.app_context():
            scrape = render_metrics()[0].decode()
            checks = list(check_task_queue())
        assert "task_queue_workers 1.0" in scrape
        heartbeat = float(scrape.split("\ntask_queue_cron_heartbeat_timestamp_seconds ", 1)[1].split()[0])
        assert abs(heartbeat - time.time()) < 60
        assert 'task_queue_scheduled_job_last_success_timestamp_seconds{job="deliver_mail"}' in scrape
        assert 'task_queue_scheduled_job_interval_seconds{job="reconcile_all"} 86400.0' in scrape
        assert all(check.ok for check in checks), checks
        assert [check.title for check in checks][:3] == ["Task queue", "Task queue workers", "Cron"]

        # A replay whose last success is three intervals old is late.
        record_job_success(connection, "replay_failed_events", time.time() - 900)
        lines = status_lines(queued_app)
        assert any(line.startswith("✗ Scheduled job replay_failed_events: last success 9") for line in lines), lines
    finally:
        stop(cron)
        stop(worker)

    # Both stopped: no worker, no heartbeat.
    lines = status_lines(queued_app)
    assert "✗ Workers: 0 alive" in lines, lines
    assert any(line.startswith("✗ Cron: no heartbeat") for line in lines), lines
    with queued_app.app_context():
        scrape = render_metrics()[0].decode()
        failing = {check.title: check for check in check_task_queue() if not check.ok}
    assert "task_queue_cron_heartbeat_timestamp_seconds 0.0" in scrape
    assert set(failing) == {"Task queue workers", "Cron", "Scheduled job replay_failed_events"}
    assert "flask queue cron" in failing["Cron"].fix and "flask queue worker" in failing["Task queue workers"].fix
    assert "flask queue run replay_failed_events" in failing["Scheduled job replay_failed_events"].fix
