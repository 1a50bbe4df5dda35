"""`flask queue …`: the processes of the task queue (app/tasks.py) and a look at it.

- `flask queue worker`: runs jobs as they come, with RQ's scheduler inside (it moves the retries that wait out a
  backoff back onto the queue). Start as many as needed, on any host, against the same Redis and database.
  `--metrics-port` serves its own counters (events applied, mail sent, Stripe calls) for Prometheus to scrape.
  `--nice N` lowers its CPU priority beside the web processes on a shared host (`lower_priority`), and holds its
  webhook drains' and mail deliveries' batches back while the host's CPUs are busy (app/tasks.py `BusyHostGate`).
- `flask queue cron`: enqueues `app.tasks.SCHEDULE` on time (RQ's CronScheduler). One per deployment.
- `flask queue run NAME`: a scheduled job now, in this process (a fresh clone has no queue).
- `flask queue status`: depth, failures, the oldest waiting mail, the webhook events waiting to be applied.

The worker is RQ's SimpleWorker: jobs run in the worker's own process, each in an app context of its own, so the
app and its connection pool are built once instead of once per forked job.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from flask import Flask
from rq import SimpleWorker
from rq.cron import CronScheduler

from app.extensions import QUEUE_NAME, task_queue
from app.logging import get_logger
from app.services.metrics import serve_process_metrics
from app.services.queue_health import queue_health
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
        worker = SimpleWorker([queue], connection=queue.connection)
        worker.work(burst=burst, with_scheduler=True, logging_level=logging.getLevelName(app.config["LOG_LEVEL"]))

    @group.command("cron")
    def cron_command():
        """Enqueue the scheduled jobs on time (one such process per deployment)."""
        queue = required_queue()
        scheduler = CronScheduler(connection=queue.connection, logging_level=app.config["LOG_LEVEL"])
        for entry in SCHEDULE:
            scheduler.register(
                entry.job, queue_name=QUEUE_NAME, interval=entry.interval, cron=entry.cron, job_timeout=3600
            )
        scheduler.start()

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
