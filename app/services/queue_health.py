"""What `/metrics`, `flask doctor` and `flask queue status` say about the task queue: depth, failures, mail age,
and the webhook events recorded but not applied yet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db, task_queue
from app.models import MailOutbox, StripeEvent, utcnow
from app.models.stripe_event import StripeEventCount

#: Mail waiting longer than this means delivery is stuck (the worker down, SMTP refusing): the alert's threshold.
MAIL_AGE_ALERT_SECONDS = 900
#: A webhook event recorded (status `received`) and not applied for longer than this means entitlements lag behind
#: Stripe (the worker that applies recorded events is down or stuck): the WebhookEventsWaiting alert's threshold.
EVENT_AGE_ALERT_SECONDS = 300


@dataclass(frozen=True)
class QueueHealth:
    configured: bool
    depth: int | None  # None: Redis unreachable
    failed: int | None
    oldest_mail_seconds: float  # 0 when nothing waits
    waiting_events: int  # webhook events in status `received`
    oldest_event_seconds: float  # 0 when none waits

    @property
    def mail_ok(self) -> bool:
        reachable = not self.configured or self.depth is not None
        return reachable and self.oldest_mail_seconds < MAIL_AGE_ALERT_SECONDS

    @property
    def events_ok(self) -> bool:
        return self.oldest_event_seconds < EVENT_AGE_ALERT_SECONDS

    @property
    def ok(self) -> bool:
        return self.mail_ok and self.events_ok

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
    return QueueHealth(queue is not None, depth, failed, oldest_mail, waiting_events, oldest_event)


class QueueCollector:
    """`/metrics`: task_queue_depth, task_queue_failed_jobs (when a queue is configured and reachable),
    mail_outbox_oldest_pending_seconds, stripe_webhook_events_waiting and
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
        return families
