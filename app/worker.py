"""`flask queue …`: the processes of the task queue (app/tasks.py) and a look at it.

- `flask queue worker`: runs jobs as they come, with RQ's scheduler inside (it moves the retries that wait out a
  backoff back onto the queue; started again within seconds when a Redis outage ended it: `QueueWorker`). Start as
  many as needed, on any host, against the same Redis and database.
  `--metrics-port` serves its own counters (events applied, mail sent, Stripe calls) for Prometheus to scrape.
  `--nice N` lowers its CPU priority beside the web processes on a shared host (`lower_priority`), and holds its
  webhook drains' and mail deliveries' batches back while the host's CPUs are busy (app/tasks.py `BusyHostGate`).
- `flask queue cron`: enqueues `app.tasks.SCHEDULE` on time (RQ's CronScheduler). One is active per deployment: it
  holds a lock in Redis; a second one started (on another host) waits as a standby and takes over when the first
  dies. It writes a heartbeat at each loop, and outlives a Redis outage (it retries with backoff, then resumes).
- `flask queue run NAME`: a scheduled job now, in this process (a fresh clone has no queue).
- `flask queue status`: depth, failures, the oldest waiting mail, the webhook events waiting to be applied.

The worker is RQ's SimpleWorker (`QueueWorker`): jobs run in the worker's own process, each in an app context of its
own, so the app and its connection pool are built once instead of once per forked job.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from multiprocessing import Process
from pathlib import Path
from typing import Any

import click
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.cron import CronScheduler
from rq.exceptions import StopRequested

from app.extensions import QUEUE_NAME, task_queue
from app.logging import get_logger
from app.services.metrics import serve_process_metrics
from app.services.queue_health import (
    CRON_HEARTBEAT_KEY,
    CRON_HEARTBEAT_TTL,
    CRON_LOCK_KEY,
    CRON_LOOP_SECONDS,
    queue_health,
)
from app.tasks import HOST_GATE, JOB_COUNTS, JOBS, SCHEDULE, BusyHostGate

log = get_logger(__name__)

#: The scheduler's switch for autogroups, and a process's own autogroup (its nice is the group's weight).
AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")
OWN_AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(nice: int) -> str:
    """Give this process (the worker and what it starts) the CPU after the processes of normal priority on the
    host, by `nice` steps; returns how, for the start's log line.

    `nice` alone is not enough on Linux: with autogroups on (the default of most distributions' kernels), the
    scheduler first shares the CPU fairly between sessions, and only then by nice between the processes of one
    session. A worker started in a session of its own (by a supervisor, a script's `setsid`, a second terminal)
    under `nice -n 10` took as much CPU as gunicorn's whole session. So the worker also sets the nice of its
    autogroup (`/proc/self/autogroup`, allowed to any user for a lower priority) — first making the session its
    own (`setsid`) unless it leads one already, so that no other process's priority changes with it. A worker that
    cannot have a session of its own (a shell's foreground job leads its process group) keeps the process nice
    only, and says so. Under systemd with CPU weights, units share the CPU by weight before nice orders a unit's own
    processes (autogroups then do not apply): give the worker's unit a low `CPUWeight=` as well (the README).
    """
    os.nice(nice)
    try:
        autogroups = AUTOGROUP_SWITCH.read_text().strip() == "1" and OWN_AUTOGROUP.exists()
    except OSError:
        autogroups = False
    if not autogroups:
        return "process"
    if os.getsid(0) != os.getpid():
        try:
            os.setsid()
        except OSError:  # a process group's leader (a shell's foreground job) cannot start a session
            return "process only (its session is shared: autogroup left as it is)"
    try:
        OWN_AUTOGROUP.write_text(str(nice))
    except OSError as error:
        return f"process only (autogroup: {error.strerror or error})"
    return "process and its session's autogroup"


#: Take the cron lock if it is free, or refresh it if this cron holds it: 1 when this cron holds it now, else 0.
HOLD_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
#: Give the cron lock up if this cron holds it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: How often a worker looks at its RQ scheduler (a child process), and starts it again if it has ended.
SCHEDULER_CHECK_SECONDS = 5


class QueueWorker(SimpleWorker):
    """RQ's SimpleWorker whose scheduler comes back within seconds of ending, not minutes.

    RQ's scheduler (`with_scheduler=True`) runs in a child process of the worker and moves the retries that wait out
    a backoff (`Retry(interval=…)`, the mail job's MAIL_RETRY) onto the queue. It ends at its first Redis error, and
    RQ starts it again only at the worker's maintenance, every 10 minutes (with the cleaning of its registries), seen
    between two waits for a job of up to 405 s each: after a Redis outage the retries waited that long. This worker
    runs RQ's own restart of it (`RQScheduler.acquire_locks(auto_start=True)`) every `scheduler_check_seconds`, and
    waits for a job no longer than that (an idle worker's loop is then one heartbeat and one BLPOP every 5 s); the
    cleaning keeps its 10 minutes. One worker per queue runs the scheduler (it holds a lock in Redis): the others try
    the lock at each check too, and so take it over within a minute of that worker's death (the lock's expiry).

    Unlike RQ's restart, a worker starts the scheduler again only when it holds the lock: RQ's starts it in a worker
    that held the lock once even while another worker's scheduler runs (two would move a job onto the queue twice).
    The lock the dead scheduler left (Redis kept its data) names this worker's pid: the worker gives it up first, so
    that it takes it again at once instead of when it expires. `scheduler_check_seconds=None` (`--burst`: the worker
    moved what was due at its start and runs no scheduler) leaves RQ's behaviour as it is.
    """

    def __init__(self, *args: Any, scheduler_check_seconds: float | None = SCHEDULER_CHECK_SECONDS, **kwargs: Any):
        self.scheduler_check_seconds = scheduler_check_seconds  # before RQ's __init__: it reads `dequeue_timeout`
        self.scheduler_checked_at = time.monotonic()
        super().__init__(*args, **kwargs)

    @property
    def dequeue_timeout(self) -> int:
        """How long one wait for a job blocks (BLPOP): at most `scheduler_check_seconds`, so that the loop comes back
        to the scheduler's check on time."""
        if self.scheduler_check_seconds is None:
            return super().dequeue_timeout
        return max(1, min(super().dequeue_timeout, math.ceil(self.scheduler_check_seconds)))

    @property
    def keeps_scheduler(self) -> bool:
        """Whether this worker looks after a scheduler: it has one (`with_scheduler`), past RQ's start of it (the
        first maintenance), and not in burst mode."""
        return self.scheduler is not None and self.scheduler_check_seconds is not None and bool(self.last_cleaned_at)

    @property
    def should_run_maintenance_tasks(self) -> bool:
        return super().should_run_maintenance_tasks or (
            self.keeps_scheduler and time.monotonic() - self.scheduler_checked_at >= (self.scheduler_check_seconds or 0)
        )

    def run_maintenance_tasks(self) -> None:
        if self.keeps_scheduler:
            self.keep_scheduler()  # first: RQ's own check (in its maintenance) then finds the scheduler alive
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()

    def keep_scheduler(self) -> None:
        """Start the scheduler again if its process has ended, when this worker holds (or wins) its lock."""
        scheduler = self.scheduler
        assert scheduler is not None
        self.scheduler_checked_at = time.monotonic()
        process: Process | None = scheduler._process
        if process is not None and process.is_alive():
            return
        try:
            if process is not None:
                for name in scheduler.acquired_locks:  # the dead scheduler's, if Redis kept it: ours to give up
                    self.connection.eval(RELEASE_LOCK, 1, scheduler.get_locking_key(name), os.getpid())
                log.warning("queue_worker_scheduler_died", worker=self.name, pid=process.pid, exitcode=process.exitcode)
                scheduler._process, scheduler._acquired_locks = None, set()
            if scheduler.acquire_locks(auto_start=True):
                started: Process | None = scheduler._process
                log.info("queue_worker_scheduler_started", worker=self.name, pid=started and started.pid)
        except RedisError as error:  # one more outage: the next check tries again
            log.warning(
                "queue_worker_scheduler_not_started", worker=self.name, error=f"{type(error).__name__}: {error}"
            )


class Cron:
    """`flask queue cron`'s loop around RQ's CronScheduler: one active cron per deployment, through a Redis outage.

    RQ's own `CronScheduler.start` ends at the first Redis error (it registers its death and returns), so a Redis
    restart stopped the scheduled jobs for good while everything else came back. Here each loop first holds the lock
    (CRON_LOCK_KEY: taken with SET NX semantics, refreshed by its holder, expiring `lock_seconds` after the holder's
    last loop), then enqueues the jobs due and writes the heartbeat (CRON_HEARTBEAT_KEY). A cron that finds another
    holding the lock is a standby: it enqueues nothing and looks again every `standby_poll` seconds. A Redis error
    logs one line and the loop tries again after a backoff (1 s doubling to `longest_backoff`); the jobs due
    meanwhile are enqueued once Redis answers."""

    def __init__(
        self,
        scheduler: CronScheduler,
        lock_seconds: int,
        standby_poll: float = 2.0,
        longest_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.scheduler = scheduler
        self.connection: Redis = scheduler.connection
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.lock_seconds = lock_seconds
        self.standby_poll = standby_poll
        self.longest_backoff = longest_backoff
        self.sleep = sleep
        self.active = False
        self.standby_logged = False
        self.failures = 0
        self.started = 0.0

    def hold_lock(self) -> bool:
        held = self.connection.eval(HOLD_LOCK, 1, CRON_LOCK_KEY, self.name, int(self.lock_seconds * 1000))
        if held and not self.active:
            self.active, self.standby_logged, self.started = True, False, time.time()
            log.info("queue_cron_active", cron=self.name, lock_seconds=self.lock_seconds)
            self.scheduler.register_birth()
        elif not held:
            if self.active:
                log.warning("queue_cron_lock_lost", cron=self.name, holder=self.holder())
                self.active = False
            if not self.standby_logged:
                log.info("queue_cron_standby", cron=self.name, active=self.holder())
                self.standby_logged = True
        return bool(held)

    def holder(self) -> str:
        holder = self.connection.get(CRON_LOCK_KEY)
        return holder.decode() if isinstance(holder, bytes) else str(holder or "")

    def beat(self) -> None:
        with self.connection.pipeline() as pipeline:
            pipeline.hset(
                CRON_HEARTBEAT_KEY, mapping={"at": repr(time.time()), "started": repr(self.started), "name": self.name}
            )
            pipeline.expire(CRON_HEARTBEAT_KEY, CRON_HEARTBEAT_TTL)
            pipeline.execute()

    def step(self) -> float:
        """One loop: hold the lock, enqueue what is due, beat; the seconds to sleep before the next."""
        if not self.hold_lock():
            return self.standby_poll
        if self.failures:
            # Redis answers again (perhaps a fresh one, empty): RQ's registry of crons may have lost this one.
            self.scheduler.register_birth()
        self.scheduler.enqueue_jobs()
        self.scheduler.heartbeat()
        self.beat()
        return min(self.scheduler.calculate_sleep_interval(), CRON_LOOP_SECONDS, self.lock_seconds / 3)

    def run(self) -> None:
        """Loop until SIGTERM/SIGINT, then give the lock up so that a standby takes over at once."""
        self.scheduler._install_signal_handlers()
        log.info("queue_cron_started", cron=self.name)
        try:
            while True:
                try:
                    pause = self.step()
                except RedisError as error:
                    self.failures += 1
                    pause = min(2.0 ** (self.failures - 1), self.longest_backoff)
                    log.warning(
                        "queue_cron_redis_unreachable",
                        cron=self.name,
                        attempt=self.failures,
                        retry_in=pause,
                        error=f"{type(error).__name__}: {error}",
                    )
                else:
                    if self.failures:
                        log.info("queue_cron_redis_back", cron=self.name, attempts=self.failures)
                        self.failures = 0
                if pause > 0:
                    self.sleep(pause)
        except (KeyboardInterrupt, StopRequested):
            log.info("queue_cron_stopping", cron=self.name)
        finally:
            self.release()

    def release(self) -> None:
        if not self.active:
            return
        try:
            if self.connection.eval(RELEASE_LOCK, 1, CRON_LOCK_KEY, self.name):  # still ours: no cron beats now
                self.connection.delete(CRON_HEARTBEAT_KEY)
            self.scheduler.register_death()
        except RedisError as error:
            log.warning("queue_cron_lock_not_released", cron=self.name, error=f"{type(error).__name__}: {error}")


def register(app: Flask) -> None:
    """Add the `flask queue` command group."""
    group = click.Group("queue", help="The task queue: worker, scheduler, status.")

    def required_queue():
        queue = task_queue()
        if queue is None:
            raise click.ClickException(
                "TASK_QUEUE_URL is not set: there is no queue (mail goes out after each "
                "response; run scheduled jobs with `flask queue run NAME`)"
            )
        return queue

    @group.command("worker")
    @click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
    @click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        envvar="WORKER_METRICS_PORT",
        help="Serve this worker's metrics at http://HOST:PORT/metrics for Prometheus (env WORKER_METRICS_PORT).",
    )
    @click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        envvar="WORKER_METRICS_HOST",
        help="The address the metrics are served on (env WORKER_METRICS_HOST).",
    )
    @click.option(
        "--nice",
        type=click.IntRange(0, 19),
        default=0,
        show_default=True,
        envvar="WORKER_NICE",
        help="Lower this worker's CPU priority by N (1-19) beside web processes on the same host, and hold its batches "
        "of webhook events and mail back while the host's CPUs are busy (env WORKER_NICE).",
    )
    def worker_command(burst: bool, metrics_port: int | None, metrics_host: str, nice: int):
        """Run queued jobs (webhook events, mail delivery with retries, the scheduled jobs) until stopped."""
        queue = required_queue()
        if nice:
            # What nice leaves the worker still slows the requests (its database backend's part of a drain is not
            # niced): beside them, its batches wait while the host is busy (a bounded wait: `BusyHostGate`).
            gate = app.extensions[HOST_GATE] = BusyHostGate()
            log.info(
                "queue_worker_priority_lowered",
                nice=nice,
                applied_to=lower_priority(nice),
                batches_held_while_host_busy=f"{gate.longest:g} s at most",
            )
        if metrics_port is not None:
            try:
                serve_process_metrics(
                    metrics_host, metrics_port, app.config["METRICS_ALLOWED_NETWORKS"], app.config.get("METRICS_TOKEN")
                )
            except OSError as error:
                raise click.ClickException(
                    f"cannot serve metrics on {metrics_host}:{metrics_port}: {error.strerror or error}"
                ) from None
        worker = QueueWorker(
            [queue], connection=queue.connection, scheduler_check_seconds=None if burst else SCHEDULER_CHECK_SECONDS
        )
        worker.work(burst=burst, with_scheduler=True, logging_level=logging.getLevelName(app.config["LOG_LEVEL"]))

    @group.command("cron")
    @click.option(
        "--lock-seconds",
        type=click.IntRange(3, 3600),
        default=60,
        show_default=True,
        envvar="CRON_LOCK_SECONDS",
        help="A standby cron takes over this long after the active one stopped looping (killed, host down); one "
        "stopped by SIGTERM/SIGINT hands over at once (env CRON_LOCK_SECONDS).",
    )
    def cron_command(lock_seconds: int):
        """Enqueue the scheduled jobs on time: one cron is active per deployment, any other waits as its standby."""
        queue = required_queue()
        scheduler = CronScheduler(connection=queue.connection, logging_level=app.config["LOG_LEVEL"])
        for entry in SCHEDULE:
            scheduler.register(
                entry.job, queue_name=QUEUE_NAME, interval=entry.interval, cron=entry.cron, job_timeout=3600
            )
        Cron(scheduler, lock_seconds).run()

    @group.command("run")
    @click.argument("name", type=click.Choice(sorted(JOBS)))
    def run_command(name: str):
        """Run one scheduled job now, in this process."""
        click.echo(f"{name}: {JOBS[name]()} {JOB_COUNTS[name]}")  # "reconcile_all: 0" read as "no customer"

    @group.command("status")
    def status_command():
        """Queue depth, failed jobs, the age of the oldest waiting mail, the webhook events waiting to be applied."""
        health = queue_health()
        for line in health.lines():
            click.echo(line)

    app.cli.add_command(group)
