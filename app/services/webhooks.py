"""Stripe webhooks, the machinery: verify → record → dispatch, in one transaction, exactly once, in any order.

- Verified from the raw bytes against every configured secret (rotation sends one `v1=` per secret), then
  parsed once.
- Recorded in `stripe_events` (the id is the primary key) and locked: of two concurrent deliveries of one
  event, the second waits for the first and then answers "duplicate".
- Dispatched to `webhook_handlers.HANDLERS` by type (what each event does lives there).
- A handler fault rolls everything back, keeps the row's error and attempt count, and answers 422 for an event
  that cannot be applied as it is, 500 for our own fault; Stripe retries both.
- Redis `webhook_processed:<id>` (7 days) is request mode's fast path for duplicates; the table is the truth. It is
  set after the commit in the same round trip as the caches the commit drops (`signals.CacheWrites`); queue mode,
  which never reads it, sets none.

Where the handler runs is `WEBHOOK_APPLY`'s choice. `request`: all of the above inside the delivery's request,
answered once applied. `queue` (the production way once a task queue is configured): the request verifies the event,
records it `received` (one statement, in autocommit: one round trip) and sees that a drain will apply it; Stripe
gets 200 `queued` once the event is stored. A drain is one RQ job for many events (RQ's own bookkeeping, ~19 Redis
commands a job, would otherwise cost as much CPU as applying the event): each event falls in one of LANES lanes, and
its delivery sets the lane's `webhook_drain_pending` flag (SET NX) and enqueues the lane's drain only when the flag
was not set. The drain (a `flask queue worker` job) deletes its flag, then claims the oldest `received` event in one
UPDATE (FOR UPDATE SKIP LOCKED: drains running at once take different events), runs its handler and commits as
above, and goes on until none is left. A fault keeps the event `failed`, and the scheduled replay with backoff
(app/tasks.py) is the retry, as Stripe's redelivery is in `request` mode; an event whose drain was lost is replayed
once it has waited a minute.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import String, TextClause, bindparam, case, select, text, update
from sqlalchemy.exc import DataError, ProgrammingError

from app.extensions import autocommit_when_idle, cache_redis, db, task_queue
from app.logging import EventWriter, get_logger
from app.models import StripeEvent, utcnow
from app.services import metrics, stripe_gateway
from app.services.signals import CacheWrites, SyncResult, commit_billing
from app.services.stripe_gateway import SignatureInvalid, verify_webhook_signature
from app.services.webhook_handlers import HANDLERS

log = get_logger(__name__)
#: The line of every event applied (`settle`), written straight to our handlers: the same line as `log.info`'s, at
#: about half its CPU (no stdlib LogRecord to make and unpack again), once per event in a worker's drain.
applied_log = EventWriter(__name__)

PROCESSED_KEY = "webhook_processed:{}"
PROCESSED_TTL = 7 * 24 * 3600
TOLERANCE_SECONDS = 300
#: The six events the endpoint is registered for (HANDLERS also takes the others Stripe may send).
GUIDE_EVENTS = metrics.WEBHOOK_EVENT_TYPES
#: The only event shape the handlers read: the API version the stripe library (and every request) speaks.
API_VERSION = stripe_gateway.API_VERSION


class WebhookRejected(Exception):
    """The delivery is refused before anything is recorded (4xx/5xx without side effects)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Outcome:
    status: str  # processed | ignored | duplicate | queued
    event_id: str
    event_type: str


def configured_secrets() -> list[str]:
    raw = current_app.config.get("STRIPE_WEBHOOK_SECRET") or ""
    return [s.strip() for s in raw.split(",") if s.strip()]


#: The latest `created` accepted (year 36812): later ones are no time a datetime or a BIGINT column can hold.
MAX_TIMESTAMP = 2**40


def is_timestamp(value: Any) -> bool:
    """An event's `created`: absent, or whole seconds since 1970 (never a float, a string or a boolean)."""
    return value is None or (type(value) is int and 0 <= value < MAX_TIMESTAMP)


def verify(payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event from the raw body if its signature matches one of our secrets within 5 minutes.

    The signature is checked on the bytes as they came; the body is then parsed once, here.
    """
    secrets = configured_secrets()
    if not secrets:
        log.error("stripe_webhook_secret_missing", reason="STRIPE_WEBHOOK_SECRET is not set: refusing every delivery")
        raise WebhookRejected(500, "webhook_not_configured", "Webhook signing secret is not configured.")
    if not signature:
        log.warning("stripe_webhook_invalid_signature", reason="missing Stripe-Signature header")
        metrics.record_webhook("unknown", "invalid_signature")
        raise WebhookRejected(400, "invalid_signature", "Missing Stripe-Signature header.")
    for secret in secrets:
        try:
            verify_webhook_signature(payload, signature, secret, TOLERANCE_SECONDS)
        except SignatureInvalid:
            continue
        except ValueError:  # the body is not UTF-8 text, so it cannot be a JSON event
            log.warning("stripe_webhook_invalid_payload")
            raise WebhookRejected(400, "invalid_payload", "The body is not a JSON event.") from None
        break
    else:
        log.warning("stripe_webhook_invalid_signature", reason="no configured secret matches, or too old")
        metrics.record_webhook("unknown", "invalid_signature")
        raise WebhookRejected(400, "invalid_signature", "Invalid signature.")
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # signed by Stripe's secret, yet not JSON (or nested past the parser)
        log.warning("stripe_webhook_invalid_payload")
        raise WebhookRejected(400, "invalid_payload", "The body is not a JSON event.") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance((event.get("data") or {}).get("object"), dict)
        or not isinstance(event["data"]["object"].get("id", ""), str)
    ):
        raise WebhookRejected(400, "invalid_payload", "The body is not a Stripe event.")
    if not is_timestamp(event.get("created")):
        raise WebhookRejected(400, "invalid_payload", "The event's 'created' is not a Unix time in seconds.")
    log.info("stripe_webhook_verified", event_id=event["id"], event_type=event["type"])
    return event


# --- the fast path ------------------------------------------------------------------------------------------------


def seen_in_redis(event_id: str) -> bool:
    client = cache_redis()
    if client is None:
        return False
    try:
        return bool(client.exists(PROCESSED_KEY.format(event_id)))
    except Exception:  # Redis down: the database decides
        return False


def remember_in_redis(event_id: str, writes: CacheWrites | None = None) -> None:
    """Mark the event handled for the fast path: added to `writes` (sent with the commit's other cache writes, in
    one round trip), or set now. Never raises: without the mark a duplicate is answered from the table."""

    def failed(error: Exception | None = None) -> None:
        log.warning("webhook_redis_unavailable", event_id=event_id)

    if writes is not None:
        writes.set_raw(PROCESSED_KEY.format(event_id), "1", PROCESSED_TTL, on_failure=failed)
        return
    client = cache_redis()
    if client is None:
        return
    try:
        client.set(PROCESSED_KEY.format(event_id), "1", ex=PROCESSED_TTL)
    except Exception:
        failed()


# --- record, then act -----------------------------------------------------------------------------------------------

DONE = ("processed", "ignored")
#: What a handler raises when a signed event cannot be applied as it is — a shape it does not expect (a key missing,
#: a value of another type) or data that contradicts ours (a subscription of another user): answered 422
#: `unprocessable_event`, not 500 (kept for our own faults: the database down, a bug). The event is kept as failed
#: either way, and Stripe retries both, so a fix — or the operator's replay — applies it.
#: (A value of the wrong type reaching a query is refused by PostgreSQL as a ProgrammingError or DataError.)
MALFORMED = (KeyError, TypeError, AttributeError, ValueError, IndexError, ProgrammingError, DataError)


#: What `record` answers for an event it has just inserted.
NEW = "new"


def settled_status(event_type: str) -> str:
    """The status an event ends in once applied: processed when a handler takes its type, else ignored."""
    return "processed" if event_type in HANDLERS else "ignored"


def insert_event(payload: str) -> TextClause:
    """The event's row, unless its id is there: one statement that also holds the new row's lock, its payload
    given by the SQL expression `payload`. Written out, as SQLAlchemy caches the compiled form of a text statement
    but compiles the dialects' ON CONFLICT inserts anew each time (several milliseconds a delivery on a busy
    machine); PostgreSQL and SQLite both speak it."""
    return text(
        "INSERT INTO stripe_events (id, type, livemode, stripe_created, received_at, payload, status, attempts, "
        f"processed_at) VALUES (:id, :type, :livemode, :stripe_created, :received_at, {payload}, :status, "
        ":attempts, :processed_at) ON CONFLICT (id) DO NOTHING RETURNING id"
    ).bindparams(
        bindparam("stripe_created", type_=StripeEvent.stripe_created.type),
        bindparam("received_at", type_=StripeEvent.received_at.type),
        bindparam("processed_at", type_=StripeEvent.processed_at.type),
    )


#: The row from the parsed event (`payload`, encoded to JSON by the column's type).
INSERT_EVENT = insert_event(":payload").bindparams(bindparam("payload", type_=StripeEvent.payload.type))
#: The row from the body as it came (`payload`, the JSON text that was verified and parsed), per database: the
#: database reads the text itself, and the parsed event is not encoded back to JSON to be stored.
INSERT_EVENT_BODY = {
    "postgresql": insert_event("CAST(:payload AS JSONB)").bindparams(bindparam("payload", type_=String())),
    "sqlite": insert_event(":payload").bindparams(bindparam("payload", type_=String())),
}


def record(event: dict[str, Any], settle: bool = False, body: str | None = None, lock: bool = True) -> tuple[str, int]:
    """Record the event, or lock its existing row: (status, attempts) before this delivery, row locked until commit;
    (NEW, 0) for an event recorded now. `body`, the JSON text the event was parsed from, is stored as it is (the
    database parses it) instead of the event encoded again. Without `lock`, a known event's status is read as
    committed, without waiting for a transaction applying it (queue mode's answer, which decides nothing).

    A new event costs one round trip: the insert both records it and holds its lock, so a concurrent delivery of
    the same event waits on the unique key and then finds it processed. With `settle`, a new row is inserted
    already marked as applied (`settled_status`, one attempt): its handler runs in this same transaction, so a
    fault rolls the mark back with everything else, and no UPDATE is needed after the handler.
    """
    now = utcnow()
    values: dict[str, Any] = {"status": "received", "attempts": 0, "processed_at": None}
    if settle:
        values = {"status": settled_status(event["type"]), "attempts": 1, "processed_at": now}
    statement = INSERT_EVENT_BODY.get(db.engine.dialect.name) if body is not None else None
    inserted = db.session.execute(
        statement if statement is not None else INSERT_EVENT,
        {
            "id": event["id"],
            "type": event["type"],
            "livemode": bool(event.get("livemode")),
            "stripe_created": datetime.fromtimestamp(int(event.get("created") or 0), tz=UTC),
            "received_at": now,
            "payload": body if statement is not None else event,
            **values,
        },
    ).first()
    if inserted is not None:
        return NEW, 0
    known = select(StripeEvent.status, StripeEvent.attempts).where(StripeEvent.id == event["id"])
    status, attempts = db.session.execute(known.with_for_update() if lock else known).one()
    return status, attempts


def mark(event_id: str, **values: Any) -> None:
    db.session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(**values))


def apply(event: dict[str, Any], attempts: int, marked: bool = False, writes: CacheWrites | None = None) -> str:
    """Run the event's handler and mark its row (unless `record` inserted it marked), then commit and send
    `subscription_changed`; `writes` go to Redis with the receivers' cache writes, once committed.

    On any fault: roll back everything the handler did, keep the error and attempt count, and re-raise. (A
    receiver's fault comes after the commit: the event stays processed, and the rollback has nothing to undo.)
    """
    handler = HANDLERS.get(event["type"])
    result = SyncResult(None)
    try:
        if handler is not None:
            handler(event, result)
        status = settled_status(event["type"])
        if not marked:
            mark(event["id"], status=status, attempts=attempts, processed_at=utcnow(), error=None)
        commit_billing(result, writes)
    except Exception as error:
        db.session.rollback()
        record_failure(event, error)
        raise
    return status


def record_failure(event: dict[str, Any], error: Exception) -> None:
    """Keep the failed delivery's error and count its attempt (in a transaction of its own).

    The attempt is counted in SQL (`attempts = attempts + 1`) on the row as it is now, not written as the number the
    failed transaction had: that transaction is rolled back, and two deliveries of one event failing at once have both
    read the same count, so each writing "count + 1" would count them as one attempt."""
    try:
        status, _ = record(event)
        if status not in DONE:
            mark(
                event["id"],
                status="failed",
                attempts=StripeEvent.attempts + 1,
                error=f"{type(error).__name__}: {error}"[:2000],
            )
        db.session.commit()
    except Exception:  # the database itself may be what failed: Stripe's retry will record it
        db.session.rollback()


def check_api_version(event: dict[str, Any]) -> None:
    """Refuse (422 `api_version_mismatch`, logged and counted, nothing recorded) an event of another API version.

    Stripe renders an event in its endpoint's `api_version`; the handlers read this library's shape only (period
    dates on the subscription item, `invoice.parent`). An older shape would pass every handler with those fields
    read as missing — a subscription with no period end — so it is refused whole before anything is written;
    Stripe retries it once the endpoint's version is corrected (`flask doctor` says how).
    """
    version = event.get("api_version")
    if version == API_VERSION:
        return
    metrics.record_webhook(metric_type(event["type"]), "api_version_mismatch")
    log.error(
        "stripe_webhook_api_version_mismatch",
        event_id=event["id"],
        event_type=event["type"],
        api_version=str(version)[:40],
        expected=API_VERSION,
    )
    raise WebhookRejected(
        422,
        "api_version_mismatch",
        f"This event is in API version {str(version)[:40]}; this endpoint reads {API_VERSION} only. "
        "Set the webhook endpoint's API version to it (`flask doctor` checks it).",
    )


def handle(payload: bytes, signature: str | None) -> Outcome:
    """The whole endpoint minus HTTP: verify, check the API version, record, then — by `WEBHOOK_APPLY` — dispatch,
    commit and `subscription_changed` here, or hand the event to the task queue (`hand_to_queue`)."""
    started = time.perf_counter()
    event = verify(payload, signature)
    event_id, event_type = event["id"], event["type"]
    check_api_version(event)
    if current_app.config.get("WEBHOOK_APPLY") == "queue":
        return hand_to_queue(event, payload)
    if seen_in_redis(event_id):
        metrics.record_webhook(metric_type(event_type), "duplicate")
        return Outcome("duplicate", event_id, event_type)

    try:
        status, attempts = record(event, settle=True, body=payload.decode("utf-8-sig"))
    except UNSTORABLE:
        unstorable(event_id)
    if status in DONE:
        db.session.commit()
        remember_in_redis(event_id)
        return duplicate(event_id, event_type)
    try:
        outcome = settle(event, attempts + 1, marked=status == NEW, started=started)
    except MALFORMED as error:
        raise WebhookRejected(
            422,
            "unprocessable_event",
            f"This {event_type} event cannot be applied as it is "
            f"({type(error).__name__}); it is kept as failed, to replay after a fix.",
        ) from error
    return Outcome(outcome, event_id, event_type)


#: What the database driver raises for a signed event it cannot store: a \u0000 that PostgreSQL text cannot hold, an
#: id longer than Stripe's (DataError), a lone surrogate (`"\ud800"`) that has no UTF-8 form (UnicodeEncodeError).
UNSTORABLE = (DataError, UnicodeEncodeError)


def unstorable(event_id: str) -> NoReturn:
    """Refuse (400) an event the database cannot store, its failed statement rolled back."""
    db.session.rollback()
    log.warning(
        "stripe_webhook_invalid_payload",
        event_id=event_id[:255].encode("utf-8", "replace").decode(),
        reason="the database cannot store it",
    )
    raise WebhookRejected(400, "invalid_payload", "The event holds values that cannot be stored.") from None


def duplicate(event_id: str, event_type: str) -> Outcome:
    """A delivery of an event already applied: counted and logged, nothing done."""
    metrics.record_webhook(metric_type(event_type), "duplicate")
    log.info("stripe_webhook_duplicate", event_id=event_id, event_type=event_type)
    return Outcome("duplicate", event_id, event_type)


def settle(event: dict[str, Any], attempts: int, marked: bool, started: float, remember: bool = True) -> str:
    """Apply the event (`apply`; with `remember`, its `webhook_processed` mark sent with the commit's cache writes),
    then count and log the outcome with the seconds since `started`; a fault is counted and logged, then re-raised.

    Only request mode reads the mark (`seen_in_redis`): queue mode's deliveries find a known event by their insert,
    so the queue's drains and jobs leave it out (`remember_marks`). After a switch to request mode, a redelivery of an
    event a drain applied is answered from the table (one more round trip), as one whose mark expired or was lost."""
    event_id, event_type = event["id"], event["type"]
    handled = CacheWrites()
    if remember:
        remember_in_redis(event_id, handled)  # sent only once the event's transaction is committed
    try:
        outcome = apply(event, attempts, marked=marked, writes=handled)
    except Exception as error:
        metrics.record_webhook(metric_type(event_type), "failed", time.perf_counter() - started)
        log.error(
            "stripe_webhook_handling_failed",
            event_id=event_id,
            event_type=event_type,
            attempts=attempts,
            error=f"{type(error).__name__}: {error}",
        )
        raise
    seconds = time.perf_counter() - started
    metrics.record_webhook(metric_type(event_type), outcome, seconds)
    applied_log.log(
        logging.INFO,
        "stripe_webhook_handled_successfully",
        event_id=event_id,
        event_type=event_type,
        outcome=outcome,
        duration_ms=round(seconds * 1000, 1),
    )
    return outcome


# --- queue mode: record and answer, apply in a worker ---------------------------------------------------------------

#: The job that drains the recorded events (`drain_received`), and the one that applies one event (`apply_recorded`:
#: a redelivered failed event, which drains leave to the replay), named (not imported: app/tasks.py is built on this
#: module).
DRAIN_TASK = "app.tasks.apply_webhook_events"
APPLY_TASK = "app.tasks.apply_webhook_event"
#: A job that fails is not retried by RQ: the event is kept failed, and the scheduled replay retries it with backoff.
APPLY_FAILURE_TTL = 7 * 24 * 3600
#: How many drains may run at once, across workers: an event's lane (`drain_lane`) picks which one it asks for.
LANES = 4
#: `webhook_drain_pending:<lane>`, set (NX) by the delivery that enqueues the lane's drain and deleted by the drain as
#: it starts: while it is set, a drain for the lane is waiting and a delivery enqueues none. It expires on its own,
#: so a drain lost with its flag still set (Redis flushed, a worker killed before the drain started) holds back
#: the lane's next one for DRAIN_PENDING_TTL at most (the scheduled replay applies what it leaves received).
DRAIN_PENDING_KEY = "webhook_drain_pending:{}"
DRAIN_PENDING_TTL = 30
#: A drain stops after this many events or seconds and enqueues the lane's next drain: a job stays short (RQ's
#: timeout, a deployment's restart), and lanes share the workers.
DRAIN_LIMIT = 500
DRAIN_SECONDS = 60
#: RQ's timeout for a drain: its DRAIN_SECONDS, then the event it was applying.
DRAIN_TIMEOUT = DRAIN_SECONDS + 240


def hand_to_queue(event: dict[str, Any], payload: bytes) -> Outcome:
    """Queue mode: record the event `received` and see that a drain will apply it; 200 `queued` once stored.

    A new event costs one round trip to the database (the insert, in autocommit), a known one a second (its status);
    then one to Redis while the event's lane has a drain pending (`request_drain`), two when it enqueues one. An event
    applied already is a duplicate; one recorded but not applied yet asks for its lane's drain again (the first may
    be lost); a failed one gets a job of its own (`apply_recorded`), as drains leave failed events to the replay's
    backoff: a redelivery (Stripe's dashboard's "Resend") applies it now. No Redis look-up first: the insert tells a
    new event from a known one anyway, and a look-up would cost every new event a round trip to spare duplicates
    one."""
    event_id, event_type = event["id"], event["type"]
    try:
        with autocommit_when_idle():
            # A known event's status without its lock: a delivery never waits for a worker applying the event (its
            # answer decides nothing; the drain's and the job's claims re-check the status under the row's lock).
            status, _ = record(event, body=payload.decode("utf-8-sig"), lock=False)
        db.session.commit()  # nothing to send in autocommit; ends the session's transaction
    except UNSTORABLE:
        unstorable(event_id)
    if status in DONE:
        return duplicate(event_id, event_type)
    if status == "failed":
        enqueue_application(event_id, event_type)
    else:
        request_drain(drain_lane(event_id), event_id)
    log.info("stripe_webhook_queued", event_id=event_id, event_type=event_type, redelivered=status != NEW)
    return Outcome("queued", event_id, event_type)


def drain_lane(event_id: str) -> int:
    """The event's lane: the same in every process (not Python's `hash`, salted per process)."""
    return zlib.crc32(event_id.encode()) % LANES


def request_drain(lane: int, event_id: str | None = None) -> bool:
    """See that a drain of `lane` will run after the events committed so far, never raising; whether it enqueued one.

    `SET webhook_drain_pending:<lane> 1 NX EX 30` on the queue's Redis (one round trip): set already, a drain is
    waiting and has not started (it deletes the flag first, then takes every event committed by then), so nothing
    more is needed; set now, the drain is enqueued (a second round trip). Redis down: the events stay `received`,
    and the scheduled replay applies them once they have waited a minute."""
    queue = task_queue()
    if queue is None:  # WEBHOOK_APPLY=queue without a queue is refused at start; an app changed since has none
        enqueue_failed(event_id, RuntimeError("TASK_QUEUE_URL is not set"), lane=lane)
        return False
    flag = DRAIN_PENDING_KEY.format(lane)
    try:
        if not queue.connection.set(flag, "1", nx=True, ex=DRAIN_PENDING_TTL):
            return False
    except RedisError as error:
        enqueue_failed(event_id, error, lane=lane)
        return False
    try:
        pipeline = queue.connection.pipeline()  # RQ's writes in one round trip (sent alone, it makes two)
        queue.enqueue_call(
            DRAIN_TASK, args=(lane,), timeout=DRAIN_TIMEOUT, failure_ttl=APPLY_FAILURE_TTL, pipeline=pipeline
        )
        pipeline.execute()
    except RedisError as error:
        enqueue_failed(event_id, error, lane=lane)
        try:  # the flag set without its drain would hold the lane's next deliveries back until it expires
            queue.connection.delete(flag)
        except RedisError:
            pass
        return False
    return True


def enqueue_application(event_id: str, event_type: str) -> None:
    """Hand one recorded event's job to the task queue, never raising: an event whose job cannot be enqueued (Redis
    down) stays as it is, for the scheduled replay. On the cache's Redis (as in the deployment guide) the job goes in
    a `CacheWrites` pipeline, as the mail's job does."""
    queue = task_queue()
    if queue is None:  # WEBHOOK_APPLY=queue without a queue is refused at start; an app changed since has none
        enqueue_failed(event_id, RuntimeError("TASK_QUEUE_URL is not set"))
        return
    writes = CacheWrites()
    if writes.shares_server(queue.connection):
        writes.add_first(
            lambda pipeline: enqueue_job(queue, event_id, event_type, pipeline),
            on_failure=lambda error: enqueue_failed(event_id, error),
        )
        writes.send()
        return
    try:
        enqueue_job(queue, event_id, event_type)
    except RedisError as error:
        enqueue_failed(event_id, error)


def enqueue_job(queue: Queue, event_id: str, event_type: str, pipeline: Any = None) -> None:
    """Enqueue the job applying the event, sent at once or with `pipeline` (RQ then only adds its writes to it)."""
    queue.enqueue_call(
        APPLY_TASK, args=(event_id, event_type), timeout=300, failure_ttl=APPLY_FAILURE_TTL, pipeline=pipeline
    )


def enqueue_failed(event_id: str | None, error: Exception, **context: Any) -> None:
    log.warning("stripe_webhook_enqueue_failed", event_id=event_id, error=f"{type(error).__name__}: {error}", **context)


def claim_event(settled: str) -> Any:
    """The statement claiming a recorded event not applied yet: marked applied (`settled`, one more attempt), its
    payload and attempt count returned. Its row lock, held until the commit, makes a concurrent claim (another
    worker's) wait, then find it applied and claim nothing; a rollback (the handler failed) leaves it as it was, for
    `record_failure` to mark failed."""
    return (
        update(StripeEvent)
        .where(StripeEvent.id == bindparam("event_id"), StripeEvent.status.in_(("received", "failed")))
        .values(status=settled, attempts=StripeEvent.attempts + 1, processed_at=bindparam("now"), error=None)
        .returning(StripeEvent.payload, StripeEvent.attempts)
    )


#: The claim by the status the event ends in (`settled_status`): built once each, so compiled once per process.
CLAIM_EVENT = {settled: claim_event(settled) for settled in DONE}

#: The drain's claim: the oldest `received` event (read from ix_stripe_events_status_received_at), marked applied
#: as `settled_status` would say, one more attempt, its id, payload and attempt count returned. SKIP LOCKED: a row
#: another drain (or a redelivery's claim) holds is passed over, so concurrent drains take different events and never
#: wait on each other; the lock is held until the event's commit, a rollback (its handler failed) undoes the claim.
#: This is its generic form (SQLite's, where FOR UPDATE is dropped); PostgreSQL is sent CLAIM_NEXT_EVENT_SQL.
CLAIM_NEXT_EVENT = (
    update(StripeEvent)
    .where(
        StripeEvent.id
        == select(StripeEvent.id)
        .where(StripeEvent.status == "received")
        .order_by(StripeEvent.received_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    .values(
        status=case((StripeEvent.type.in_(sorted(HANDLERS)), "processed"), else_="ignored"),
        attempts=StripeEvent.attempts + 1,
        processed_at=bindparam("now"),
        error=None,
    )
    .returning(StripeEvent.id, StripeEvent.payload, StripeEvent.attempts)
)

#: CLAIM_NEXT_EVENT written out, per database: the drain runs it once per event, and the ORM's UPDATE costs about as
#: much CPU again as the rest of the claim (the ORM's bulk-update preparation, its cache key, the handled types'
#: IN list expanded anew each time), where a text statement's compiled form is cached whole. The handled types are
#: our own names, written in as literals (no bound list to expand).
CLAIM_NEXT_EVENT_SQL = {
    "postgresql": text(
        "UPDATE stripe_events SET status = CASE WHEN type IN ("
        + ", ".join(f"'{event_type}'" for event_type in sorted(HANDLERS))
        + ") THEN 'processed' ELSE 'ignored' END, attempts = attempts + 1, processed_at = :now, error = NULL "
        "WHERE id = (SELECT id FROM stripe_events WHERE status = 'received' ORDER BY received_at LIMIT 1 "
        "FOR UPDATE SKIP LOCKED) RETURNING id, payload, attempts"
    )
    .bindparams(bindparam("now", type_=StripeEvent.processed_at.type))
    .columns(StripeEvent.id, StripeEvent.payload, StripeEvent.attempts)
}


def apply_recorded(event_id: str, event_type: str) -> str | None:
    """Apply a recorded event unless it is applied already (a redelivered failed event's job, and the scheduled
    replay): claim it, run its handler, commit; returns the outcome, or None when there was nothing to claim. A fault
    is rolled back, the event kept `failed` with its error and attempts, and re-raised."""
    started = time.perf_counter()
    claimed = db.session.execute(
        CLAIM_EVENT[settled_status(event_type)], {"event_id": event_id, "now": utcnow()}
    ).first()
    if claimed is None:
        db.session.rollback()
        log.info("stripe_webhook_already_applied", event_id=event_id, event_type=event_type)
        return None
    event, attempts = claimed
    return settle(event, attempts, marked=True, started=started, remember=remember_marks())


def remember_marks() -> bool:
    """Whether an event applied now gets its `webhook_processed` mark: in request mode only, the one that reads it (a
    redelivered event's job and the scheduled replay run in either mode; drains in queue mode only)."""
    return current_app.config.get("WEBHOOK_APPLY") != "queue"


@dataclass
class Drained:
    """What a drain did: events applied, events whose handler failed (kept failed), and whether it stopped at its
    limit (its lane's next drain enqueued) rather than for want of events."""

    applied: int = 0
    failed: int = 0
    limited: bool = False


def drain_received(lane: int) -> Drained:
    """The drain job's work: apply the `received` events, oldest first, one transaction each, until none is left.

    First the lane's flag is deleted: a delivery committed after this point enqueues a new drain, so no event is
    left without one (one committed before is taken by this drain's claims). Each event is claimed (one statement,
    SKIP LOCKED: drains running at once take different events), then applied as a request applies it (`settle`:
    commit, caches, mail; no `webhook_processed` mark in queue mode, which never reads it). A fault in one event rolls
    it back and keeps it `failed` (the replay retries it with backoff), and the drain goes on with the next. After DRAIN_LIMIT events or
    DRAIN_SECONDS it enqueues the lane's next drain and stops. A claim that fails (the database down) raises."""
    clear_drain_flag(lane)
    claim_sql = CLAIM_NEXT_EVENT_SQL.get(db.engine.dialect.name)
    remember = remember_marks()
    drained = Drained()
    started = time.monotonic()
    faulty: set[str] = set()
    while True:
        if drained.applied + drained.failed >= DRAIN_LIMIT or time.monotonic() - started >= DRAIN_SECONDS:
            drained.limited = True
            request_drain(lane)
            break
        event_started = time.perf_counter()
        if claim_sql is not None:
            # On the session's connection (in the session's transaction): the session's ORM execution adds nothing to
            # a text statement here (its one hook, app/sqlite_locking.py, is SQLite's) but a third of the claim's CPU.
            claimed = db.session.connection().execute(claim_sql, {"now": utcnow()}).first()
        else:
            claimed = db.session.execute(CLAIM_NEXT_EVENT, {"now": utcnow()}).first()
        if claimed is None:
            db.session.rollback()
            break
        event_id, event, attempts = claimed
        if event_id in faulty:  # its failure could not be recorded (the database?): not claimed again and again
            db.session.rollback()
            break
        try:
            settle(event, attempts, marked=True, started=event_started, remember=remember)
        except Exception:  # rolled back, kept failed, counted and logged by `settle`; the others still apply
            db.session.rollback()
            faulty.add(event_id)
            drained.failed += 1
        else:
            drained.applied += 1
    log.info(
        "stripe_webhook_drain_finished",
        lane=lane,
        applied=drained.applied,
        failed=drained.failed,
        limited=drained.limited,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return drained


def clear_drain_flag(lane: int) -> None:
    """Delete the lane's `webhook_drain_pending` flag, never raising (Redis down: it expires on its own)."""
    queue = task_queue()
    if queue is None:
        return
    try:
        queue.connection.delete(DRAIN_PENDING_KEY.format(lane))
    except RedisError as error:
        log.warning("stripe_webhook_drain_flag_not_cleared", lane=lane, error=f"{type(error).__name__}: {error}")


def metric_type(event_type: str) -> str:
    """Label values stay bounded: unknown types are counted together."""
    return event_type if event_type in HANDLERS else "other"


def reprocess(event_id: str) -> Outcome:
    """Run a recorded event's handler again (the operator's replay), whatever its status."""
    row = db.session.execute(
        select(StripeEvent.payload, StripeEvent.attempts).where(StripeEvent.id == event_id).with_for_update()
    ).first()
    if row is None:
        raise LookupError(event_id)
    event, attempts = row
    return Outcome(apply(event, attempts + 1), event_id, event["type"])
