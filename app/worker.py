"""`flask queue …`: the processes of the task queue (app/tasks.py) and a look at it.

- `flask queue worker`: runs jobs as they come, with RQ's scheduler inside (it moves the retries that wait out a
  backoff back onto the queue). Start as many as needed, on any host, against the same Redis and database.
  `--metrics-port` serves its own counters (events applied, mail sent, Stripe calls) for Prometheus to scrape.
- `flask queue cron`: enqueues `app.tasks.SCHEDULE` on time (RQ's CronScheduler). One per deployment.
- `flask queue run NAME`: a scheduled job now, in this process (a fresh clone has no queue).
- `flask queue status`: depth, failures, the oldest waiting mail, the webhook events waiting to be applied.

The worker is RQ's SimpleWorker: jobs run in the worker's own process, each in an app context of its own, so the
app and its connection pool are built once instead of once per forked job.
"""

from __future__ import annotations

import logging

import click
from flask import Flask
from rq import SimpleWorker
from rq.cron import CronScheduler

from app.extensions import QUEUE_NAME, task_queue
from app.services.metrics import serve_process_metrics
from app.services.queue_health import queue_health
from app.tasks import JOB_COUNTS, JOBS, SCHEDULE


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
    def worker_command(burst: bool, metrics_port: int | None, metrics_host: str):
        """Run queued jobs (webhook events, mail delivery with retries, the scheduled jobs) until stopped."""
        queue = required_queue()
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
