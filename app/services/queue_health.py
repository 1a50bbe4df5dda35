"""What `/metrics`, `flask doctor` and `flask queue status` say about the task queue: depth, failures, mail age,
the webhook events recorded but not applied yet, and whether its processes are there: the workers alive, the cron's
heartbeat, each scheduled job's last success (the keys below, written by app/worker.py and app/tasks.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import QUEUE_NAME, db, task_queue
from app.models import MailOutbox, StripeEvent, utcnow
from app.models.stripe_event import StripeEventCount

#: Mail waiting longer than this means delivery is stuck (the worker down, SMTP refusing): the alert's threshold.
MAIL_AGE_ALERT_SECONDS = 900
#: A webhook event recorded (status `received`) and not applied for longer than this means entitlements lag behind
#: Stripe (the worker that applies recorded events is down or stuck): the WebhookEventsWaiting alert's threshold.
EVENT_AGE_ALERT_SECONDS = 300

#: The running cron's heartbeat (`flask queue cron`): a hash {at: its last loop's time, started: when it became the
#: active cron, name: host:pid}, written at each loop (at most CRON_LOOP_SECONDS apart) and expiring after
#: CRON_HEARTBEAT_TTL: no key, no cron running. Older than CRON_HEARTBEAT_ALERT_SECONDS: the cron is stuck or gone.
CRON_HEARTBEAT_KEY = f"{QUEUE_NAME}:cron:heartbeat"
CRON_HEARTBEAT_TTL = 600
CRON_HEARTBEAT_ALERT_SECONDS = 300
#: The lock of the active cron (its name, with a TTL it refreshes at each loop): a second `flask queue cron` waits
#: as a standby while another holds it, and takes it once it expires (the first one died) or is released.
CRON_LOCK_KEY = f"{QUEUE_NAME}:cron:lock"
#: The longest a cron's loop sleeps (so its lock and heartbeat are refreshed that often).
CRON_LOOP_SECONDS = 15
#: Each scheduled job's last success: a hash job name → UTC Unix time, written by the job when it succeeds.
SCHEDULED_JOBS_KEY = f"{QUEUE_NAME}:scheduled_jobs"
#: A scheduled job whose last success (without one, the active cron's start) is older than this many of its
#: intervals is late: ✗ in `flask doctor` / `flask queue status`, ScheduledJobLate in the alert rules.
LATE_INTERVALS = 2


def record_job_success(connection: Redis, name: str, at: float | None = None) -> None:
    """Note that the scheduled job `name` just succeeded (SCHEDULED_JOBS_KEY)."""
    connection.hset(SCHEDULED_JOBS_KEY, name, repr(time.time() if at is None else at))


@dataclass(frozen=True)
class ScheduledJobState:
    name: str
    interval: int  # seconds: its interval, or a cron's longest gap between two runs
    last_success: float | None  # Unix time, None: no success recorded
    due_since: float | None  # without a success recorded, it is late counting from here: the active cron's start

    def age(self, now: float) -> float | None:
        """Seconds since its last success, or since the cron started when it has none (None: neither known)."""
        since = self.last_success if self.last_success is not None else self.due_since
        return None if since is None else max(now - since, 0.0)

    def late(self, now: float) -> bool:
        age = self.age(now)
        return age is not None and age > LATE_INTERVALS * self.interval

    @property
    def title(self) -> str:
        return f"Scheduled job {self.name}"

    def detail(self, now: float) -> str:
        age = self.age(now)
        if self.last_success is None:
            last = "no success recorded" + ("" if age is None else f" in the {age:.0f} s since the cron started")
        else:
            last = f"last success {age:.0f} s ago"
        return f"{last} (every {self.interval} s)"

    def line(self, now: float) -> str:
        return f"{mark(not self.late(now))} {self.title}: {self.detail(now)}"


@dataclass(frozen=True)
class ProcessesHealth:
    """The queue's processes as Redis sees them: None fields when no queue is configured or Redis does not answer."""

    workers: int | None = None
    cron_heartbeat: float | None = None  # Unix time of the active cron's last loop, None: no cron running
    cron_name: str = ""
    jobs: tuple[ScheduledJobState, ...] = field(default=())
    read_at: float = 0.0

    @property
    def cron_age(self) -> float | None:
        return None if self.cron_heartbeat is None else max(self.read_at - self.cron_heartbeat, 0.0)

    @property
    def cron_ok(self) -> bool:
        return self.cron_age is not None and self.cron_age < CRON_HEARTBEAT_ALERT_SECONDS

    @property
    def workers_ok(self) -> bool:
        return bool(self.workers)

    @property
    def late_jobs(self) -> list[ScheduledJobState]:
        return [job for job in self.jobs if job.late(self.read_at)]

    @property
    def ok(self) -> bool:
        return self.cron_ok and self.workers_ok and not self.late_jobs

    def cron_detail(self) -> str:
        if self.cron_age is None:
            return "no heartbeat: no `flask queue cron` is running (the scheduled jobs are not enqueued)"
        return f"{self.cron_name} active, heartbeat {self.cron_age:.0f} s ago"

    def workers_detail(self) -> str:
        return f"{self.workers} alive"

    def lines(self) -> list[str]:
        return [
            f"{mark(self.workers_ok)} Workers: {self.workers_detail()}",
            f"{mark(self.cron_ok)} Cron: {self.cron_detail()}",
            *(job.line(self.read_at) for job in self.jobs),
        ]


def decoded(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def timestamp(value: str | None) -> float | None:
    """A Unix time written by the cron or a job, or None (absent, or not a number: nothing to trust)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def read_processes(connection: Redis, schedule: Mapping[str, int]) -> ProcessesHealth:
    """The workers alive (RQ's registry, each worker's own key still there), the cron's heartbeat and each scheduled
    job's last success, against `schedule` (job name → interval in seconds). Raises RedisError."""
    workers = len(SimpleWorker.all(connection=connection))
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.hgetall(CRON_HEARTBEAT_KEY)
        pipeline.hgetall(SCHEDULED_JOBS_KEY)
        heartbeat_raw, successes_raw = pipeline.execute()
    heartbeat = {decoded(key): decoded(value) for key, value in heartbeat_raw.items()}
    successes = {decoded(key): timestamp(decoded(value)) for key, value in successes_raw.items()}
    at = timestamp(heartbeat.get("at"))
    started = timestamp(heartbeat.get("started")) if at is not None else None
    jobs = tuple(ScheduledJobState(name, interval, successes.get(name), started) for name, interval in schedule.items())
    return ProcessesHealth(workers, at, heartbeat.get("name") or "", jobs, time.time())


#: Each scheduled job's interval in seconds, by name (a cron schedule's longest gap): filled in by `app.tasks`, which
#: defines the schedule and is imported with the app (`app.worker`); the jobs import the services, which import this
#: module, so it cannot import them.
SCHEDULE_INTERVALS: dict[str, int] = {}


def processes_health() -> ProcessesHealth | None:
    """The queue's processes (`read_processes` on the app's queue and `app.tasks.SCHEDULE`), or None when no queue
    is configured or Redis does not answer (the queue's own line says so); needs an app context."""
    queue = task_queue()
    if queue is None:
        return None
    try:
        return read_processes(queue.connection, SCHEDULE_INTERVALS)
    except RedisError:
        return None


@dataclass(frozen=True)
class QueueHealth:
    configured: bool
    depth: int | None  # None: Redis unreachable
    failed: int | None
    oldest_mail_seconds: float  # 0 when nothing waits
    waiting_events: int  # webhook events in status `received`
    oldest_event_seconds: float  # 0 when none waits
    processes: ProcessesHealth | None = None  # None: no queue configured, or Redis unreachable

    @property
    def mail_ok(self) -> bool:
        reachable = not self.configured or self.depth is not None
        return reachable and self.oldest_mail_seconds < MAIL_AGE_ALERT_SECONDS

    @property
    def events_ok(self) -> bool:
        return self.oldest_event_seconds < EVENT_AGE_ALERT_SECONDS

    @property
    def ok(self) -> bool:
        return self.mail_ok and self.events_ok and (self.processes is None or self.processes.ok)

    def lines(self) -> list[str]:
        if not self.configured:
            queue = "no TASK_QUEUE_URL: mail is sent by the app after each response"
        elif self.depth is None:
            queue = "TASK_QUEUE_URL unreachable"
        else:
            queue = f"{self.depth} job(s) waiting, {self.failed} failed"
        return [
            f"{mark(self.mail_ok)} Task queue: {queue}; oldest waiting mail {self.oldest_mail_seconds:.0f} s",
            f"{mark(self.events_ok)} Webhook events: {self.waiting_events} waiting to be applied; "
            f"oldest {self.oldest_event_seconds:.0f} s",
            *(self.processes.lines() if self.processes is not None else ()),
        ]


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


#: The oldest pending outbox row's creation time.
OLDEST_PENDING_MAIL = select(func.min(MailOutbox.created_at)).where(MailOutbox.status == "pending").scalar_subquery()
#: The oldest event waiting to be applied: the first entry of ix_stripe_events_status_received_at's `received` range
#: (PostgreSQL reads min() over an index's leading equality as a LIMIT 1 index scan, whatever the table's size). The
#: entries of events applied since the table's last vacuum are stepped over: they stay in the index until then.
OLDEST_RECEIVED_EVENT = (
    select(func.min(StripeEvent.received_at)).where(StripeEvent.status == "received").scalar_subquery()
)
#: Events waiting to be applied: the `received` rows of stripe_event_counts (kept by triggers, at most 16 rows),
#: instead of counting a backlog that may hold millions of index entries.
RECEIVED_EVENTS = (
    select(func.coalesce(func.sum(StripeEventCount.events), 0))
    .where(StripeEventCount.status == "received")
    .scalar_subquery()
)


def seconds_since(moment: datetime | None) -> float:
    return max((utcnow() - moment).total_seconds(), 0.0) if moment else 0.0


def waiting_in_database() -> tuple[float, int, float]:
    """(oldest pending mail's age, events waiting to be applied, oldest such event's age), ages in seconds (0 when
    nothing waits): one round trip, three index look-ups."""
    oldest_mail, waiting_events, oldest_event = db.session.execute(
        select(OLDEST_PENDING_MAIL, RECEIVED_EVENTS, OLDEST_RECEIVED_EVENT)
    ).one()
    return seconds_since(oldest_mail), int(waiting_events), seconds_since(oldest_event)


def queue_health() -> QueueHealth:
    """Read the queue (Redis), the outbox and the recorded webhook events (database); needs an app context."""
    queue = task_queue()
    depth = failed = None
    if queue is not None:
        try:
            depth = queue.count
            failed = FailedJobRegistry(queue=queue).count
        except RedisError:
            depth = failed = None
    oldest_mail, waiting_events, oldest_event = waiting_in_database()
    processes = processes_health() if depth is not None else None
    return QueueHealth(queue is not None, depth, failed, oldest_mail, waiting_events, oldest_event, processes)


class QueueCollector:
    """`/metrics`: task_queue_depth, task_queue_failed_jobs, task_queue_workers, task_queue_cron_heartbeat_timestamp_seconds,
    task_queue_scheduled_job_last_success_timestamp_seconds{job} and task_queue_scheduled_job_interval_seconds{job}
    (when a queue is configured and reachable), mail_outbox_oldest_pending_seconds, stripe_webhook_events_waiting and
    stripe_webhook_events_oldest_waiting_seconds, read at each scrape so every app process answers the same figures."""

    def collect(self):
        try:
            health = queue_health()
        except SQLAlchemyError:  # the database-down alert tells that story
            db.session.rollback()
            return []
        families = [
            GaugeMetricFamily(
                "mail_outbox_oldest_pending_seconds",
                "Seconds the oldest pending outbox mail has waited (0 when none waits).",
                value=health.oldest_mail_seconds,
            ),
            GaugeMetricFamily(
                "stripe_webhook_events_waiting",
                "Webhook events recorded and not applied yet (status received).",
                value=health.waiting_events,
            ),
            GaugeMetricFamily(
                "stripe_webhook_events_oldest_waiting_seconds",
                "Seconds the oldest webhook event not applied yet has waited since it was received (0 when none).",
                value=health.oldest_event_seconds,
            ),
        ]
        if health.depth is not None:
            families.append(
                GaugeMetricFamily("task_queue_depth", "Jobs waiting on the task queue.", value=health.depth)
            )
            families.append(
                GaugeMetricFamily(
                    "task_queue_failed_jobs",
                    "Jobs in the task queue's failed registry (kept 7 days).",
                    value=health.failed,
                )
            )
        if health.processes is not None:
            families.extend(process_families(health.processes))
        return families


def process_families(processes: ProcessesHealth) -> list[GaugeMetricFamily]:
    """The gauges of the queue's processes: the heartbeat is 0 when no cron runs (so its alert fires), a job with no
    success recorded has no last-success sample."""
    workers = GaugeMetricFamily(
        "task_queue_workers", "Workers alive on the task queue (RQ's registry).", value=processes.workers or 0
    )
    heartbeat = GaugeMetricFamily(
        "task_queue_cron_heartbeat_timestamp_seconds",
        "Unix time of the active `flask queue cron`'s last loop (0: no cron running).",
        value=processes.cron_heartbeat or 0,
    )
    last_success = GaugeMetricFamily(
        "task_queue_scheduled_job_last_success_timestamp_seconds",
        "Unix time each scheduled job last succeeded.",
        labels=["job"],
    )
    interval = GaugeMetricFamily(
        "task_queue_scheduled_job_interval_seconds",
        "Each scheduled job's interval (a cron schedule's longest gap between two runs).",
        labels=["job"],
    )
    for job in processes.jobs:
        interval.add_metric([job.name], job.interval)
        if job.last_success is not None:
            last_success.add_metric([job.name], job.last_success)
    return [workers, heartbeat, last_success, interval]
