"""A worker's RQ scheduler through a Redis restart, with a real `flask queue worker` and a real Redis (restarted with
its data, as a Redis with persistence comes back).

The scheduler (`with_scheduler=True`) runs in a child process of the worker and moves the retries that wait out a
backoff (RQ's `Retry(interval=…)`, the mail job's MAIL_RETRY) from the scheduled registry onto the queue. A Redis
outage kills that child (it ends at its first Redis error and stays a defunct process), and RQ starts it again only
at its maintenance, every 10 minutes: a retry due during or just after the outage waited that long. The worker now
looks at its scheduler every SCHEDULER_CHECK_SECONDS and starts it again.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from rq import Queue, Retry
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from app.extensions import QUEUE_NAME
from app.worker import SCHEDULER_CHECK_SECONDS
from tests.queue.test_cron import services, stop  # noqa: F401 - services: a fixture (it marks the test `stops_services`)
from tests.queue.test_worker import free_port, start_worker, wait_for

#: The retry's wait: longer than the moments between its scheduling and Redis going away.
RETRY_SECONDS = 6


def fails_once(marker: str) -> None:
    """The job: its first run fails (an empty `marker` left behind), its retry succeeds (the time it ran, in
    `marker`)."""
    path = Path(marker)
    if not path.exists():
        path.write_text("")
        raise RuntimeError("the first run fails: a retry waits")
    path.write_text(repr(time.time()))


def children(pid: int) -> dict[int, str]:
    """A process's children and their states (`Z`: defunct)."""
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(child): stat for child, stat in (line.split() for line in out.splitlines())}


def test_a_retry_waiting_over_a_redis_restart_runs_soon_after_redis_is_back(
    app,
    migrated_database,
    redis_url,
    services,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    marker = tmp_path / "ran"
    dump = Path(services.dir) / "dump.rdb"
    worker = start_worker(migrated_database, redis_url, free_port(), LOG_LEVEL="INFO")
    try:
        connection = redis.Redis.from_url(redis_url)
        lock = RQScheduler.get_locking_key(QUEUE_NAME)
        assert wait_for(lambda: connection.exists(lock) and children(worker.pid), 30), worker.stderr
        (scheduler,) = children(worker.pid)

        Queue(QUEUE_NAME, connection=connection).enqueue(
            f"{__name__}.fails_once", str(marker), retry=Retry(max=1, interval=RETRY_SECONDS)
        )
        registry = ScheduledJobRegistry(QUEUE_NAME, connection=connection)
        assert wait_for(lambda: registry.count == 1, 20, 0.05)  # failed once, its retry waits
        connection.save()  # what a Redis with persistence keeps over its restart
        services.stop_redis()
        assert marker.read_text() == ""  # the retry still waited when Redis went away

        # The scheduler dies of the outage: gone, or a defunct child of the worker.
        assert wait_for(lambda: children(worker.pid).get(scheduler, "Z").startswith("Z"), 40, 0.5)
        services.start_redis()
        back = time.time()
        dump.unlink()  # loaded: the next start (another test's) begins empty again
        assert worker.poll() is None

        # RQ's own check (its maintenance, every 10 minutes) would leave the retry waiting until then.
        assert wait_for(lambda: marker.read_text() != "", 15 + SCHEDULER_CHECK_SECONDS), children(worker.pid)
        assert float(marker.read_text()) - back < 15 + SCHEDULER_CHECK_SECONDS
        assert connection.exists(lock)
    finally:
        stop(worker)  # terminated (killed if it outlasts 10 s on a loaded machine)
        dump.unlink(missing_ok=True)
    log = worker.stderr.read().decode()
    assert "queue_worker_scheduler_died" in log and "queue_worker_scheduler_started" in log, log
