"""The slow work, as RQ jobs: mail delivery, the nightly reconcile, the replay of failed webhook events.

RQ (on the Redis the app already uses) rather than Celery: the jobs are a handful of plain functions, RQ needs no
broker or result backend beyond Redis, its retries with backoff and its cron scheduler cover what is needed, and a
worker is one `flask queue worker` process. Every job runs in a fresh app context of the worker's app, so it gets a
session of its own that is removed when the job ends.

With `WEBHOOK_APPLY=queue` the webhook endpoint records each Stripe event and, unless a drain of its lane is waiting
already, enqueues `apply_webhook_events`: one job applies every event recorded by then (app/services/webhooks.py).
`apply_webhook_event` applies one event: a redelivered failed one.

`SCHEDULE` is what `flask queue cron` (RQ's CronScheduler, one process per deployment) enqueues: the mail sweep
every minute (mail left pending while Redis or SMTP was down, each mail once its own backoff lets it:
app/services/mail.py's MAIL_BACKOFF), failed-event replay every five minutes (each event
on its own exponential backoff; with it, the events left unapplied a minute after they were recorded, their job
lost), `flask stripe sync --all` nightly, the alert evaluation on weekdays after the close and the alert digest
daily after it (app/services/alerts.py). The per-day dashboard counts need no job: the database's triggers keep
them in the writing transaction.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from croniter import croniter
from flask import current_app, has_app_context
from redis.exceptions import RedisError
from rq import Queue, get_current_job
from sqlalchemy import and_, or_, select, update

from app.extensions import db, task_queue
from app.logging import get_logger
from app.models import StripeEvent, utcnow
from app.services.alerts import DIGEST_CRON, EVALUATION_CRON, evaluate_watched, send_digests
from app.services.mail import clear_delivery_flag, deliver_batch, hold_delivery_flag, request_delivery
from app.services.queue_health import SCHEDULE_INTERVALS, record_job_success
from app.services.stripe_admin import customers_to_sync, reconcile
from app.services.webhooks import apply_recorded, drain_received

log = get_logger(__name__)

Result = TypeVar("Result")

#: A failed event's k-th replay is due REPLAY_BASE × (2^k − 1) after it was received (5 min, 15 min, 35 min, …);
#: after REPLAY_MAX_ATTEMPTS it waits for the operator (`flask stripe replay-events --failed`).
REPLAY_BASE = timedelta(minutes=5)
REPLAY_MAX_ATTEMPTS = 10
#: A recorded event not applied this long after its receipt has lost its job (Redis down after the commit, a worker
#: killed mid-job): the replay applies it.
RECEIVED_GRACE = timedelta(minutes=1)


class MailNotDelivered(RuntimeError):
    """Raised by the delivery job when a mail could not be sent, so that RQ retries it with backoff."""


class EventsNotApplied(RuntimeError):
    """Raised by a drain once done when some of its events failed (kept failed, for the replay): the job fails, so
    RQ's failed registry (and `task_queue_failed_jobs`) shows it."""


def in_app_context(job: Callable[..., Result]) -> Callable[..., Result]:
    """Run the job in an app context of its own (a session of its own, removed at the end)."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> Result:
        with current_app.app_context():
            return job(*args, **kwargs)

    return run


def note_success(name: str) -> None:
    """Record that the scheduled job `name` succeeded (`flask queue status`, `flask doctor` and /metrics read it): on
    the job's Redis, or the app's queue when run by `flask queue run`; not at all without a queue. A Redis that does
    not answer costs the record, not the job's result."""
    job = get_current_job()
    queue = task_queue() if job is None and has_app_context() else None
    connection = job.connection if job is not None else queue.connection if queue is not None else None
    if connection is None:
        return
    try:
        record_job_success(connection, name)
    except RedisError as error:
        log.warning("scheduled_job_success_not_recorded", job=name, error=f"{type(error).__name__}: {error}")


def records_success(job: Callable[..., Result]) -> Callable[..., Result]:
    """Record the scheduled job's success when it returns (`note_success`); a job that raises records nothing."""

    @functools.wraps(job)
    def run(*args: Any, **kwargs: Any) -> Result:
        result = job(*args, **kwargs)
        note_success(job.__name__)
        return result

    return run


#: The unit of /proc/stat's CPU times (USER_HZ).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Where a worker beside the web processes (`flask queue worker --nice`) keeps its `BusyHostGate` (app.extensions).
HOST_GATE = "queue_worker_host_gate"


@dataclass
class BusyHostGate:
    """Hold a batch back while the host's CPUs are busy with work of normal priority (a worker started with `--nice`,
    beside the web processes: `lower_priority`), `longest` seconds at most; then let it go.

    Nice alone leaves a niced worker a share of a busy CPU (a tenth at nice 10, against one busy process), and what
    its batches make others do is not niced at all: its PostgreSQL backend's queries (a quarter to a third as much CPU
    again as the worker's own, measured beside gunicorn), the SMTP server's side of each mail, Redis. So while the
    deliveries come, a worker that takes its share slows them by more than its share. Between batches (never holding
    a transaction), the gate looks at the host's CPU time over `probe` seconds (`/proc/stat`: user, system, interrupts
    and steal are busy; idle, I/O wait and niced time — its own kind — are free) and lets the batch go once
    `free_cores` are free (half the host's cores, on a host of one or two). A host busy for longer than `longest` still
    gets one batch per `longest` from each worker: the backlog moves, if slowly. And a host busy for `spell` seconds
    of holding in a row is busy with more than a burst of requests (other work, or requests that do not stop): the
    gate holds nothing back until it sees a core free again (nice alone then shares the CPU), so that the backlog does
    not wait for as long as the host is busy, nor events so long that the replay takes them for lost
    (RECEIVED_GRACE). Once the requests stop, the next look lets the batches go: the backlog is applied at once.
    Without `/proc/stat` (not Linux) it never holds anything back."""

    free_cores: float = 1.0
    probe: float = 0.2
    longest: float = 2.0
    #: The shortest look back over the previous batch that is read (shorter: CPU times count in 10 ms ticks).
    look_back: float = 0.05
    stat_path: Path = Path("/proc/stat")
    sleep: Callable[[float], None] = time.sleep
    spell: float = 20.0
    #: The previous reading (the end of the last wait), and the seconds held since a core was last seen free.
    last: tuple[int, int, int] | None = None
    held: float = 0.0

    def cpu_times(self) -> tuple[int, int, int] | None:
        """(busy, total, cores) from the host's CPU times, or None when they cannot be read."""
        try:
            lines = self.stat_path.read_text().splitlines()
            fields = [int(value) for value in lines[0].split()[1:9]]
        except (OSError, IndexError, ValueError):
            return None
        user, _nice, system, _idle, _iowait, irq, softirq, steal = fields + [0] * (8 - len(fields))
        cores = sum(1 for line in lines[1:] if line.startswith("cpu"))
        return user + system + irq + softirq + steal, sum(fields), max(cores, 1)

    def free_enough(self, before: tuple[int, int, int], after: tuple[int, int, int]) -> bool:
        """Whether `free_cores` (half the cores, on a host of one or two) were free between the two readings."""
        busy, total, cores = after[0] - before[0], after[1] - before[1], after[2]
        return total <= 0 or (total - busy) / total * cores >= min(self.free_cores, cores / 2)

    def wait(self) -> float:
        """Wait while the host is busy, about `longest` seconds at most; the seconds waited (probes slept).

        First a look back, over the previous batch: were the cores free meanwhile (which counts the worker's own
        database backend as busy)? Then the batch goes at once. Otherwise the gate looks again over `probe` seconds
        in which the worker itself does nothing, until they are free or `longest` has passed."""
        now = self.cpu_times()
        if now is None:
            return 0.0
        last, self.last = self.last, now
        if last is not None and now[1] - last[1] >= now[2] * self.look_back * CLOCK_TICKS:
            if self.free_enough(last, now):
                self.held = 0.0
                return 0.0
        if self.held >= self.spell:
            return 0.0
        waited = 0.0
        while waited < self.longest:
            before = self.last
            self.sleep(self.probe)
            after = self.cpu_times()
            if after is None:
                break
            self.last = after
            waited += self.probe
            if self.free_enough(before, after):
                self.held = 0.0
                return waited
        self.held += waited
        return waited


def hold_while_host_busy() -> float:
    """Before a batch: wait while the host is busy if this worker runs beside the web processes (its `BusyHostGate`);
    the seconds waited."""
    gate = current_app.extensions.get(HOST_GATE)
    return gate.wait() if gate is not None else 0.0


#: A delivery job stops after this long (between batches) and enqueues the next: well within its RQ timeout (120 s).
#: Should that strike mid-batch anyway (a slow mail server: each SMTP step may take MAIL_TIMEOUT), the mails sent so far
#: are recorded already (one commit each) and the one being sent stays pending (`deliver_batch`).
DELIVERY_SECONDS = 60


@records_success
@in_app_context
def deliver_mail(limit: int = 50) -> int:
    """Send the outbox's pending mail that is due (`deliver_batch`: a mail that failed waits for its `next_attempt_at`),
    `limit` at a time, until none is left; returns how many were sent. Raise when some could not be sent (RQ retries
    the job with backoff).

    First the `mail_delivery_pending` flag is deleted: a mail committed after this point enqueues a new job, one
    committed before is in this job's batches (one job sends a burst's mails, however many). A failed run whose job
    RQ retries sets the flag again until its retry: the mail committed meanwhile waits for that retry (or the sweep,
    every minute) rather than each enqueue a job of its own that fails too while SMTP is down."""
    clear_delivery_flag()
    started = time.monotonic()
    sent = 0
    while True:
        hold_while_host_busy()
        delivery = deliver_batch(limit)
        sent += delivery.sent
        if delivery.failed:
            job = get_current_job()
            if job is not None and job.retries_left:
                hold_delivery_flag(job.get_retry_interval())
            raise MailNotDelivered(f"{delivery.failed} mail(s) not sent, {sent} sent; they stay pending")
        if delivery.sent < limit:
            return sent
        if time.monotonic() - started >= DELIVERY_SECONDS:
            request_delivery()
            return sent


@in_app_context
def apply_webhook_events(lane: int) -> int:
    """Drain the recorded Stripe events (`WEBHOOK_APPLY=queue`): apply each `received` one, oldest first, until none
    is left; returns how many were applied. Fails (once the others are applied) when some event's handler failed."""
    drained = drain_received(lane, pause=hold_while_host_busy)
    if drained.failed:
        raise EventsNotApplied(
            f"{drained.failed} event(s) failed, kept failed for the replay; {drained.applied} applied"
        )
    return drained.applied


@in_app_context
def apply_webhook_event(event_id: str, event_type: str) -> str | None:
    """Apply one Stripe event the endpoint recorded (`WEBHOOK_APPLY=queue`: a redelivered failed event), unless another
    job or the replay has: its outcome, or None. A fault leaves the event failed and fails the job (no RQ retry: the replay retries it)."""
    return apply_recorded(event_id, event_type)


#: The nightly reconcile re-reads this many customers per job, then enqueues the rest behind the jobs that came
#: meanwhile: a worker stays free for webhook drains and mail between chunks. In one job, a deployment with a single
#: worker would hold every webhook event of the night for the whole sync (minutes to an hour at Stripe's rate limits),
#: and WebhookEventsWaiting would page.
RECONCILE_CHUNK = 100
#: Each chunk's RQ timeout (a chunk is RECONCILE_CHUNK customers, a few Stripe calls each).
RECONCILE_CHUNK_TIMEOUT = 900


@in_app_context
def reconcile_all(after_user_id: int = 0, drifted: int = 0, synced: int = 0, chunk: int = RECONCILE_CHUNK) -> int:
    """The nightly `flask stripe sync --all`: every customer re-read from Stripe, `chunk` at a time in user id order;
    returns how many had drifted so far. On the task queue a chunk enqueues the next one (the customers after its
    last, with the counts so far) and returns; run by hand (`flask queue run reconcile_all`, no queue) it goes on in
    this process. The last chunk logs `reconcile_finished` with the totals."""
    job = get_current_job()
    while True:
        customers = customers_to_sync(None, after_user_id=after_user_id, limit=chunk)
        drifted += sum(1 for drift in reconcile(customers) if drift.actions)
        synced += len(customers)
        if len(customers) < chunk:
            break
        after_user_id = customers[-1][0]
        if job is not None:
            Queue(job.origin, connection=job.connection).enqueue(
                reconcile_all, after_user_id, drifted, synced, chunk, job_timeout=RECONCILE_CHUNK_TIMEOUT
            )
            return drifted
    log.info("reconcile_finished", drifted=drifted, customers=synced)
    note_success("reconcile_all")  # the whole sync, not a chunk
    return drifted


def replay_due(attempts: int) -> timedelta:
    """How long after its receipt a failed event with `attempts` deliveries behind it is replayed again."""
    return REPLAY_BASE * (2**attempts - 1)


#: What a recorded event left `received` past RECEIVED_GRACE is marked with before the replay applies it.
LEFT_RECEIVED = "left received: its drain was lost, or its worker stopped while applying it"


@records_success
@in_app_context
def replay_failed_events() -> int:
    """Apply again the failed events whose backoff has passed, and those left `received` over RECEIVED_GRACE (their
    drain lost); returns how many now succeeded. Each is claimed as a queued job claims it: an event applied since it
    was listed (a redelivery, a late drain) is left alone.

    An event left `received` is first marked failed with one more attempt, in a transaction of its own, then applied:
    had its worker died applying it (killed, out of memory), the event would otherwise stay `received` with its
    attempts unchanged (the death rolled the claim back) and be taken again by every drain and replay, forever; as a
    failed event it gets the backoff and the cap of REPLAY_MAX_ATTEMPTS, and drains no longer take it."""
    now = utcnow()
    rows = db.session.execute(
        select(StripeEvent.id, StripeEvent.type, StripeEvent.status, StripeEvent.received_at, StripeEvent.attempts)
        .where(
            or_(
                and_(StripeEvent.status == "failed", StripeEvent.attempts < REPLAY_MAX_ATTEMPTS),
                and_(StripeEvent.status == "received", StripeEvent.received_at < now - RECEIVED_GRACE),
            )
        )
        .order_by(StripeEvent.stripe_created)
    ).all()
    db.session.rollback()
    succeeded = 0
    for event_id, event_type, status, received_at, attempts in rows:
        if status == "received":
            marked = db.session.execute(
                update(StripeEvent)
                .where(StripeEvent.id == event_id, StripeEvent.status == "received")
                .values(status="failed", attempts=StripeEvent.attempts + 1, error=LEFT_RECEIVED)
                .returning(StripeEvent.id)
            ).first()
            db.session.commit()
            if not marked:  # applied (or claimed) since it was listed
                continue
            attempts += 1
        elif received_at + replay_due(attempts) > now:
            continue
        try:
            outcome = apply_recorded(event_id, event_type)
        except Exception as error:  # kept as failed with its error and attempt count; its next replay waits longer
            db.session.rollback()
            log.warning(
                "event_replay_failed",
                event_id=event_id,
                attempts=attempts + 1,
                error=f"{type(error).__name__}: {error}",
            )
        else:
            succeeded += outcome is not None
    return succeeded


@records_success
@in_app_context
def evaluate_alerts(on: date | None = None) -> int:
    """Evaluate the watched strategies on the newest bar on or before `on` (today); returns the new signals."""
    return evaluate_watched(on).signals


@records_success
@in_app_context
def send_alert_digests() -> int:
    """Queue the daily alert digests; returns how many."""
    return send_digests()


@dataclass(frozen=True)
class Scheduled:
    job: Callable[..., Any]
    interval: int | None = None  # seconds
    cron: str | None = None  # UTC
    #: What the number the job returns counts (`flask queue run` prints it after the number).
    counts: str = ""


SCHEDULE = (
    Scheduled(deliver_mail, interval=60, counts="mail(s) sent"),
    Scheduled(replay_failed_events, interval=300, counts="event(s) applied"),
    Scheduled(reconcile_all, cron="30 3 * * *", counts="customer(s) had drifted and were repaired"),
    Scheduled(evaluate_alerts, cron=EVALUATION_CRON, counts="new signal(s)"),
    Scheduled(send_alert_digests, cron=DIGEST_CRON, counts="digest(s) added to the mail outbox"),
)
JOBS = {entry.job.__name__: entry.job for entry in SCHEDULE}


def longest_gap(cron: str, over: timedelta = timedelta(days=7)) -> int:
    """The longest time between two runs of a cron schedule (UTC), in seconds, over a week from now: a weekdays' job
    waits from Friday to Monday."""
    start = datetime.now(UTC)
    runs = croniter(cron, start)
    previous = runs.get_next(datetime)
    gap = 0.0
    while previous < start + over:
        following = runs.get_next(datetime)
        gap = max(gap, (following - previous).total_seconds())
        previous = following
    return int(gap)


# Each scheduled job's interval in seconds (a cron schedule's longest gap): how late its last success may be.
SCHEDULE_INTERVALS.update({entry.job.__name__: entry.interval or longest_gap(entry.cron or "") for entry in SCHEDULE})
#: What each job's number counts, by name.
JOB_COUNTS = {entry.job.__name__: entry.counts for entry in SCHEDULE}
