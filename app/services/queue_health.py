"""What `/metrics`, `flask doctor` and `flask queue status` say about the task queue: depth, failures, mail age."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db, task_queue
from app.models import MailOutbox, utcnow

#: Mail waiting longer than this means delivery is stuck (the worker down, SMTP refusing): the alert's threshold.
MAIL_AGE_ALERT_SECONDS = 900


@dataclass(frozen=True)
class QueueHealth:
    configured: bool
    depth: int | None  # None: Redis unreachable
    failed: int | None
    oldest_mail_seconds: float  # 0 when nothing waits

    @property
    def ok(self) -> bool:
        reachable = not self.configured or self.depth is not None
        return reachable and self.oldest_mail_seconds < MAIL_AGE_ALERT_SECONDS

    def lines(self) -> list[str]:
        mark = "✓" if self.ok else "✗"
        if not self.configured:
            queue = "no TASK_QUEUE_URL: mail is sent by the app after each response"
        elif self.depth is None:
            queue = "TASK_QUEUE_URL unreachable"
        else:
            queue = f"{self.depth} job(s) waiting, {self.failed} failed"
        return [f"{mark} Task queue: {queue}; oldest waiting mail {self.oldest_mail_seconds:.0f} s"]


def oldest_pending_mail_seconds() -> float:
    """Seconds the oldest pending outbox row has waited (0 when none waits)."""
    oldest = db.session.scalar(select(func.min(MailOutbox.created_at)).where(MailOutbox.status == "pending"))
    return max((utcnow() - oldest).total_seconds(), 0.0) if oldest else 0.0


def queue_health() -> QueueHealth:
    """Read the queue (Redis) and the outbox (database); needs an app context."""
    queue = task_queue()
    depth = failed = None
    if queue is not None:
        try:
            depth = queue.count
            failed = FailedJobRegistry(queue=queue).count
        except RedisError:
            depth = failed = None
    return QueueHealth(queue is not None, depth, failed, oldest_pending_mail_seconds())


class QueueCollector:
    """`/metrics`: task_queue_depth, task_queue_failed_jobs (when a queue is configured and reachable) and
    mail_outbox_oldest_pending_seconds, read at each scrape so every app process answers the same figures."""

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
            )
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
