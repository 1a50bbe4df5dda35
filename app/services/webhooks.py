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
was not set. The drain (a `flask queue worker` job) deletes its flag, then claims the oldest `received` events,
DRAIN_BATCH at most, in one UPDATE (FOR UPDATE SKIP LOCKED: drains running at once take different events; one whose
customer has an older event another drain holds is given back until that one is applied, so a customer's events are
applied in the order received), locks their users in id order, runs their handlers in the order received, each under
a savepoint, adds the count changes up and commits them together, announces each, and goes on until none is left:
BEGIN, the claim, the count rows' upserts, COMMIT and the Redis round trip are paid once per batch, not once per
event; `drain_received` says why drains at once cannot deadlock. A fault undoes its own event alone and keeps it
`failed`, and the scheduled replay with backoff (app/tasks.py) is the retry, as Stripe's redelivery is in `request`
mode; an event whose drain was lost is replayed once it has waited a minute.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import Integer, String, TextClause, bindparam, case, column, null, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError

from app.extensions import autocommit_when_idle, cache_redis, db, task_queue
from app.logging import EventWriter, get_logger
from app.models import StripeEvent, utcnow
from app.services import metrics, stripe_gateway
from app.services.signals import CacheWrites, SyncResult, commit_billing, subscription_changed
from app.services.stripe_gateway import SignatureInvalid, id_of, verify_webhook_signature
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
    """The event from the raw body if its signature matches one of our secrets within 5 minutes, either way.

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
    # The stripe library checks only a signature's age: one dated ahead (a clock far off, or a capture signed with a
    # leaked secret to outlive its rotation) would pass for as long as its date is ahead. Refused like a stale one.
    # The `t=` read as the library reads it (its first), which the matching MAC covered.
    signed_at = next(int(part.split("=", 2)[1]) for part in signature.split(",") if part.split("=", 2)[0] == "t")
    if signed_at > time.time() + TOLERANCE_SECONDS:
        log.warning("stripe_webhook_invalid_signature", reason="signed too far in the future")
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
        handling_failed(event, attempts, error, started)
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
    `record_failure` to mark failed. This is its generic form (SQLite's); PostgreSQL is sent CLAIM_EVENT_SQL."""
    return (
        update(StripeEvent)
        .where(StripeEvent.id == bindparam("event_id"), StripeEvent.status.in_(("received", "failed")))
        .values(status=settled, attempts=StripeEvent.attempts + 1, processed_at=bindparam("now"), error=None)
        .returning(StripeEvent.payload, StripeEvent.attempts)
    )


#: The claim by the status the event ends in (`settled_status`): built once each, so compiled once per process.
CLAIM_EVENT = {settled: claim_event(settled) for settled in DONE}

#: PostgreSQL's claim of one recorded event by id (`claim_event`), which also begins the transaction's kept counts
#: (`batch_counts_begin()`, an InitPlan run once, in the same round trip): a queue worker's transaction adds to the
#: count rows only inside its COMMIT, in their global order (migration 0015_drain_batch_counts), as a drain's batch
#: does, so that the two never wait for each other's count rows in a cycle (see `drain_received`).
CLAIM_EVENT_SQL = (
    text(
        "UPDATE stripe_events SET status = :settled, attempts = attempts + 1, processed_at = :now, error = NULL "
        "WHERE id = :event_id AND status IN ('received', 'failed') AND (SELECT batch_counts_begin()) "
        "RETURNING payload, attempts"
    )
    .bindparams(bindparam("now", type_=StripeEvent.processed_at.type), bindparam("event_id", type_=String()))
    .columns(StripeEvent.payload, StripeEvent.attempts)
)

#: The drain's claim: the oldest `received` events, up to `batch` (read from ix_stripe_events_status_received_at),
#: each marked applied as `settled_status` would say, one more attempt, their id, payload, attempt count and receipt
#: time returned, and `held_by` (see CLAIM_NEXT_EVENT_SQL). SKIP LOCKED: a row another drain (or a redelivery's
#: claim) holds is passed over, so concurrent drains take different events and never wait on each other here; the
#: locks are held until the commit, a rollback undoes the claim. This is its generic form (SQLite's, where FOR UPDATE
#: is dropped, one event at a time: SQLite runs one writer at a time anyway, so no event is ever held by another
#: transaction and `held_by` is always NULL); PostgreSQL is sent CLAIM_NEXT_EVENT_SQL.
CLAIM_NEXT_EVENT = (
    update(StripeEvent)
    .where(
        StripeEvent.id
        == select(StripeEvent.id)
        .where(StripeEvent.status == "received")
        .order_by(StripeEvent.received_at, StripeEvent.id)
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
    .returning(
        StripeEvent.id, StripeEvent.payload, StripeEvent.attempts, StripeEvent.received_at, null().label("held_by")
    )
)

#: A drain claims and applies up to this many events per transaction. Below 64: a transaction with more
#: subtransactions (the handlers' savepoints) that wrote overflows PostgreSQL's per-backend cache of them, and every
#: snapshot taken meanwhile, any session's, then looks them up in pg_subtrans.
DRAIN_BATCH = 20

#: The handled types, written in as literals (our own names): the claim's status, and the events it keeps in order.
HANDLED_TYPES = ", ".join(f"'{event_type}'" for event_type in sorted(HANDLERS))

#: The Stripe customer of a claimed event as the claim reads it, in SQL: `event_customer`'s (the object itself for
#: `customer.updated`, its `customer` otherwise). An older event of it is looked up by the expressions the indexes of
#: migration 0004 hold (ix_stripe_events_object_customer, ix_stripe_events_customer_object_id).
EVENT_CUSTOMER_SQL = (
    "CASE WHEN stripe_events.type = 'customer.updated' THEN stripe_events.payload -> 'data' -> 'object' ->> 'id' "
    "ELSE stripe_events.payload -> 'data' -> 'object' ->> 'customer' END"
)

#: CLAIM_NEXT_EVENT written out for PostgreSQL, `batch` events at once: the ORM's UPDATE costs about as much CPU again
#: as the rest of the claim (the ORM's bulk-update preparation, its cache key, the handled types' IN list expanded
#: anew each time), where a text statement's compiled form is cached whole. The ids are picked by one
#: `ARRAY(…)` in a one-row FROM item, an InitPlan run once, so the LIMIT and the SKIP LOCKED apply to one pick (an
#: `IN (…)` may be planned as a join), and the RETURNING list can read the pick. `batch_counts_begin()` (an InitPlan
#: too) begins the transaction's kept counts in the same round trip: see `drain_received`.
#:
#: `held_by`, per claimed event: an older `received` event of its customer that this claim did not take (None
#: mostly) — one another transaction holds (claimed and not committed yet: SKIP LOCKED passed it over), so the drain
#: gives this one back (`claim_received`) rather than apply it first. Read in the claim's snapshot, through the
#: indexes on an event's customer; it locks nothing. The pick is ordered by (received_at, id), the order the check
#: compares in: an event left out of a pick of the oldest is never older than one taken.
CLAIM_NEXT_EVENT_SQL = {
    "postgresql": text(
        f"UPDATE stripe_events SET status = CASE WHEN type IN ({HANDLED_TYPES}) THEN 'processed' ELSE 'ignored' END, "
        "attempts = attempts + 1, processed_at = :now, error = NULL "
        "FROM (SELECT ARRAY(SELECT id FROM stripe_events WHERE status = 'received' ORDER BY received_at, id "
        "LIMIT :batch FOR UPDATE SKIP LOCKED) AS ids OFFSET 0) picked "
        "WHERE id = ANY(picked.ids) AND (SELECT batch_counts_begin()) "
        "RETURNING id, payload, attempts, received_at, (SELECT o.id FROM stripe_events o "
        f"WHERE o.status = 'received' AND o.type IN ({HANDLED_TYPES}) AND o.id <> ALL(picked.ids) "
        "AND (o.received_at, o.id) < (stripe_events.received_at, stripe_events.id) "
        f"AND (o.payload -> 'data' -> 'object' ->> 'customer' = {EVENT_CUSTOMER_SQL} OR (o.type LIKE 'customer.%' "
        f"AND o.payload -> 'data' -> 'object' ->> 'id' = {EVENT_CUSTOMER_SQL})) LIMIT 1) AS held_by"
    )
    .bindparams(bindparam("now", type_=StripeEvent.processed_at.type), bindparam("batch", DRAIN_BATCH, type_=Integer()))
    .columns(
        StripeEvent.id, StripeEvent.payload, StripeEvent.attempts, StripeEvent.received_at, column("held_by", String())
    )
}

#: The users a batch's handlers may lock, locked before any handler runs, in id order (ORDER BY is applied before
#: FOR UPDATE locks the rows, so they are locked one after the other in that order): the users linked to the
#: events' customers.
LOCK_BATCH_USERS = text(
    "SELECT id, stripe_customer_id FROM users WHERE stripe_customer_id = ANY(:customers) ORDER BY id FOR UPDATE"
).bindparams(bindparam("customers", type_=ARRAY(String())))

#: A claimed event given back (`received`, its attempt not counted) within the batch's transaction: applied after the
#: batch's commit, in a transaction of its own (`apply_alone`).
UNCLAIM = text(
    "UPDATE stripe_events SET status = 'received', attempts = attempts - 1, processed_at = NULL "
    "WHERE id = ANY(:event_ids)"
).bindparams(bindparam("event_ids", type_=ARRAY(String())))


def apply_recorded(event_id: str, event_type: str) -> str | None:
    """Apply a recorded event unless it is applied already (a redelivered failed event's job, and the scheduled
    replay): claim it, run its handler, commit; returns the outcome, or None when there was nothing to claim. A fault
    is rolled back, the event kept `failed` with its error and attempts, and re-raised."""
    started = time.perf_counter()
    postgres = db.engine.dialect.name == "postgresql"
    values = {"event_id": event_id, "now": utcnow()}
    if postgres:
        # On the session's connection, as the drain's claims (the session's ORM execution adds nothing here).
        row = (
            db.session.connection().execute(CLAIM_EVENT_SQL, {**values, "settled": settled_status(event_type)}).first()
        )
    else:
        row = db.session.execute(CLAIM_EVENT[settled_status(event_type)], values).first()
    if row is None:
        db.session.rollback()
        log.info("stripe_webhook_already_applied", event_id=event_id, event_type=event_type)
        return None
    event, attempts = row
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
    #: Seconds its `pause` held its batches back (a worker beside busy web processes: app/tasks.py `BusyHostGate`).
    held: float = 0.0


def drain_received(lane: int, pause: Callable[[], float] | None = None) -> Drained:
    """The drain job's work: apply the `received` events, oldest first, DRAIN_BATCH at a time, until none is left.

    First the lane's flag is deleted: a delivery committed after this point enqueues a new drain, so no event is
    left without one (one committed before is taken by this drain's claims). Each batch is claimed in one statement
    (SKIP LOCKED: drains running at once take different events), then applied in one transaction (`apply_claimed`):
    a fault in one event undoes that event alone and keeps it `failed` (the replay retries it with backoff), the
    others stand. Before each claim it calls `pause` (given: the worker's wait while the host is busy, returning the
    seconds it waited), holding no transaction. After DRAIN_LIMIT events or DRAIN_SECONDS it enqueues the lane's next
    drain and stops. A batch whose transaction is lost (a flush refused, the commit failing) is taken again one event
    per transaction, then batches go on; a claim that fails (the database down) raises.

    A customer's events are applied in the order received, across drains at once. SKIP LOCKED alone would not see
    to it: drain A claims a customer's older event, drain B (passing A's locked row over) its newer one, and if B got
    to the user first, A's event would then be stale (skipped), its transition missing from the audit trail. So the
    claim also reads, for each event it takes, whether an older `received` event of the same customer is left that it
    did not take (`held_by`: another transaction holds it, its claim not committed yet). Such an event is given back
    in the claim's transaction (no attempt counted; all of them given back, the transaction is just rolled back),
    the others applied; then, the transaction ended, the drain waits for the transactions holding those older events
    to end (`wait_for_holders`) and claims again: it (or another drain, having claimed it meanwhile, which checks the
    same) takes the event once every older one of its customer is applied, failed or back to `received` ahead of it.
    So none is left `received` with no drain coming: the drain that gave it back is still going (past DRAIN_SECONDS,
    it enqueues the lane's next one). The check is sound whenever it is read: an older event seen applied was
    committed before; one seen `received` holds the newer one back. The oldest event held anywhere is never held
    back, so drains always get on.

    Why drains applying batches at once cannot deadlock (on PostgreSQL; SQLite runs one writer at a time): every lock
    a batch's transaction waits for is taken in one global order — users before count rows; users by id; count
    rows by table, then key — and none is waited for out of that order:
      1. the claim waits for nothing (SKIP LOCKED; its look at older events of the claimed events' customers reads
         them, locking nothing); a drain waiting for older events' holders does so after its transaction's end, in a
         transaction holding no other lock, that ends as soon as its share locks are granted: it closes no cycle;
      2. the users every handler of the batch may lock are locked before any handler runs, in id order
         (`lock_batch_users`); an event whose handler could lock a user not known beforehand (its customer not
         linked yet: the handler may link it to the user Stripe or the Checkout Session names) is given back and
         applied after the commit, in a transaction of its own;
      3. the handlers then lock only rows of those users (their subscriptions, conversions, mails), which any
         writer locks only while holding the user, so no wait; their count changes (and the claim's event counts)
         lock no count row: they are kept aside (migration 0015_drain_batch_counts);
      4. the COMMIT adds them up in table then key order (the kept changes' deferred trigger), after the last
         statement: the count rows are the last locks the transaction takes.
    Every queue worker's transaction — a lone event, an event given back, a redelivery's job, the replay — keeps its
    counts aside the same way and locks at most one user, so it fits the same order. What may still meet a batch in
    a cycle is what could always meet a worker's transaction: another writer upserting count rows out of order (the
    success page's sync, request mode's deliveries during a switch to queue mode). PostgreSQL then ends one of them;
    if it is the batch, its events are taken again, one transaction each: none is failed for it.
    """
    clear_drain_flag(lane)
    drained = Drained()
    started = time.monotonic()
    faulty: set[str] = set()
    alone = 0  # how many events to take one per transaction (a lost batch's), before batches again
    while True:
        done = drained.applied + drained.failed
        if done >= DRAIN_LIMIT or time.monotonic() - started >= DRAIN_SECONDS:
            drained.limited = True
            request_drain(lane)
            break
        if pause is not None:
            drained.held += pause()
        claimed = claim_received(min(1 if alone else DRAIN_BATCH, DRAIN_LIMIT - done))
        if not claimed or faulty.intersection(row.id for row in claimed):
            # (an event whose failure could not be recorded, the database failing?, is not claimed again and again)
            db.session.rollback()
            break
        ready = [row for row in claimed if row.held_by is None]
        held = [row for row in claimed if row.held_by is not None]
        if not ready:
            db.session.rollback()  # every claim given back: nothing else was written
        else:
            try:
                applied, failed = apply_claimed(ready, [row.id for row in held])
            except BatchLost as lost:
                db.session.rollback()  # its events are `received` again: taken one by one next
                cause = lost.__cause__
                log.warning("stripe_webhook_batch_lost", events=len(ready), error=f"{type(cause).__name__}: {cause}")
                alone = len(ready)
            else:
                alone = max(alone - len(ready), 0)
                drained.applied += applied
                drained.failed += len(failed)
                faulty.update(failed)
        if held:
            wait_for_holders(sorted({row.held_by for row in held}), events=len(held))
    log.info(
        "stripe_webhook_drain_finished",
        lane=lane,
        applied=drained.applied,
        failed=drained.failed,
        limited=drained.limited,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        held_ms=round(drained.held * 1000, 1),
    )
    return drained


def claim_received(batch: int) -> list[Any]:
    """Claim the oldest `received` events, `batch` at most (one on SQLite): rows (id, payload, attempts, received_at,
    held_by) in the order they were received (RETURNING keeps none). An event whose `held_by` is set has an older
    event of its customer that another transaction holds: the drain gives it back (`drain_received`)."""
    claim_sql = CLAIM_NEXT_EVENT_SQL.get(db.engine.dialect.name)
    if claim_sql is not None:
        # On the session's connection (in the session's transaction): the session's ORM execution adds nothing to a
        # text statement here (its one hook, app/sqlite_locking.py, is SQLite's) but a third of the claim's CPU.
        claimed = db.session.connection().execute(claim_sql, {"now": utcnow(), "batch": batch}).all()
    else:
        claimed = db.session.execute(CLAIM_NEXT_EVENT, {"now": utcnow()}).all()
    return sorted(claimed, key=lambda row: (row.received_at, row.id))


#: The most a drain waits at once for the transactions holding older events of its customers (`wait_for_holders`),
#: and PostgreSQL's SQLSTATE when a lock wait reaches its lock_timeout.
HOLDER_WAIT = "10s"
LOCK_NOT_AVAILABLE = "55P03"
#: The older events a drain gave its claims back for, share-locked: granted once the transactions holding them have
#: ended (a claim holds its rows FOR UPDATE, a claim by id FOR NO KEY UPDATE: both conflict with FOR SHARE).
WAIT_FOR_HOLDERS = text("SELECT id FROM stripe_events WHERE id = ANY(:event_ids) FOR SHARE").bindparams(
    bindparam("event_ids", type_=ARRAY(String()))
)


def wait_for_holders(event_ids: list[str], events: int) -> None:
    """Wait, in a transaction of its own that holds nothing else, until the transactions holding `event_ids` (older
    events of the customers whose claims the drain gave back) have ended, HOLDER_WAIT at most: the drain then claims
    again, and takes its given-back events after them. A transaction waiting while holding no other lock closes no
    cycle of waits (`drain_received`); a wait cut short only sends the drain round again (within DRAIN_SECONDS)."""
    log.info("stripe_webhook_claims_held_back", events=events, held_by=event_ids[:5])
    connection = db.session.connection()
    try:
        connection.execute(text(f"SET LOCAL lock_timeout = '{HOLDER_WAIT}'"))
        connection.execute(WAIT_FOR_HOLDERS, {"event_ids": event_ids})
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        log.warning("stripe_webhook_holder_wait_timed_out", held_by=event_ids[:5])  # still at work, or stuck
    finally:
        db.session.rollback()


def apply_claimed(claimed: list[Any], held_back: list[str]) -> tuple[int, list[str]]:
    """Apply a drain's claimed events in the claim's transaction: (how many were applied, the ids of those that
    failed); the claims of `held_back` (events an older one of whose customer another transaction holds) are given
    back in the same transaction, for a later claim. A lone event is applied as a redelivery's job applies one
    (`settle`: a fault rolls it all back and keeps it failed); several, as a batch (`lock_batch_users`, then
    `apply_batch`), followed by the events given back for want of a linked user, each alone (`apply_alone`). Raises
    BatchLost when the batch's transaction was lost."""
    if len(claimed) == 1:
        if held_back:
            db.session.connection().execute(UNCLAIM, {"event_ids": held_back})
        event, attempts = claimed[0].payload, claimed[0].attempts
        try:
            settle(event, attempts, marked=True, started=time.perf_counter(), remember=remember_marks())
        except Exception:  # rolled back, kept failed, counted and logged by `settle`
            db.session.rollback()
            return 0, [claimed[0].id]
        return 1, []
    batched, given_back = lock_batch_users(claimed, held_back)
    applied, failed = apply_batch(batched) if batched else (0, [])
    if not batched:
        db.session.commit()  # the claims given back (the counts kept of them cancel out)
    for event_id, event_type in given_back:
        outcome = apply_alone(event_id, event_type)
        if outcome is False:
            failed.append(event_id)
        elif outcome is True:
            applied += 1
    return applied, failed


def event_customer(event: dict[str, Any]) -> str | None:
    """The Stripe customer whose linked user the event's handler locks (the customer itself for `customer.updated`,
    its object's `customer` otherwise); None for an event whose handler locks no user by a customer (no handler, no
    customer: the handlers then find no user, or refuse the shape before they lock anything)."""
    obj = event["data"]["object"]
    if event["type"] not in HANDLERS or not isinstance(obj, dict):
        return None
    customer = obj.get("id") if event["type"] == "customer.updated" else id_of(obj.get("customer"))
    return customer if isinstance(customer, str) else None


def lock_batch_users(claimed: list[Any], held_back: list[str]) -> tuple[list[Any], list[tuple[str, str]]]:
    """Lock, in id order, the users linked to the batch's customers (`LOCK_BATCH_USERS`, one statement): the claimed
    rows to apply in this transaction, and the (id, type) of the events given back (`UNCLAIM`, in the same statement
    as the claims of `held_back`) — those whose customer is linked to no user yet. Their handlers may then lock a user
    no query can name beforehand: the one Stripe's customer names (`sync.find_user_for_customer`), the one a Checkout
    Session names (`sync.link_customer`), or one linked meanwhile; they go alone, after the batch's commit. The others
    lock their customer's user, locked here (a customer stays linked to one user: `link_customer` never moves it)."""
    customers = []
    for row in claimed:
        try:
            customers.append(event_customer(row.payload))
        except Exception:  # a shape the handler refuses before it locks anything
            customers.append(None)
    wanted = sorted({customer for customer in customers if customer is not None})
    linked: set[str] = set()
    if wanted:
        linked.update(
            customer for _, customer in db.session.connection().execute(LOCK_BATCH_USERS, {"customers": wanted})
        )
    batched, given_back = [], []
    for row, customer in zip(claimed, customers, strict=True):
        if customer is not None and customer not in linked:
            given_back.append((row.id, row.payload["type"]))
        else:
            batched.append(row)
    if given_back or held_back:
        unclaimed = [event_id for event_id, _ in given_back] + held_back
        db.session.connection().execute(UNCLAIM, {"event_ids": unclaimed})
    return batched, given_back


def apply_alone(event_id: str, event_type: str) -> bool | None:
    """Apply an event a batch gave back, in a transaction of its own, as a redelivery's job does (`apply_recorded`):
    True once applied, False when its handler failed (kept failed), None when another drain has taken it since."""
    try:
        return apply_recorded(event_id, event_type) is not None
    except Exception:  # rolled back, kept failed, counted and logged by `settle`
        db.session.rollback()
        return False


#: Each handled event of a batch runs under this savepoint, sent on the driver's own cursor: the session's
#: `begin_nested` (its SessionTransaction, the SAVEPOINT compiled and executed through the engine, the RELEASE) cost
#: about 0.4 ms of CPU per event, as much as half of what a transaction per event cost. They are not released: each
#: nests in the one before (PostgreSQL keeps a savepoint of the same name, and ROLLBACK TO takes the newest), and the
#: commit ends them all; releasing one would cost a round trip and change nothing.
SAVEPOINT = "SAVEPOINT drain_event"
ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT drain_event"


class BatchLost(Exception):
    """The batch's transaction was lost whole: under a handler (a flush of the session's own failed, which rolls back
    the session's transaction, not the savepoint it knows nothing of) or at its commit (PostgreSQL ended it): the
    drain takes its events again, one transaction each."""


def apply_batch(claimed: list[Any]) -> tuple[int, list[str]]:
    """Apply a drain's batch of claimed events (id, payload, attempts, received_at), in that order, in the claim's
    transaction, their users locked already (`lock_batch_users`): each handler under a savepoint of its own, so a
    fault undoes that event's writes alone, and the event is then marked `failed` in the same transaction (its claim's
    attempt counted, its error kept; the replay retries it). One commit for the batch (which adds the kept counts
    up), then `subscription_changed` for each applied event in order, their cache writes (and the mail receiver's
    flag) sent to Redis in one pipeline; each event counted and logged as `settle` does. Returns (applied, failed
    ids); raises BatchLost when a fault took the whole transaction.

    One transaction for N events instead of N: BEGIN, the claim and COMMIT are paid once, and so are the commit's
    ORM bookkeeping, the count rows' upserts and the Redis round trip. An event whose type has no handler needs no
    savepoint. The session is flushed before each savepoint (what an earlier event left pending is written outside
    the next one's) and at the end of each handler (its writes inside its own); after a fault the session forgets
    every object it holds (their state may be the undone one), as a commit would expire them.

    Each applied event's handling time (`stripe_webhook_processing_seconds`, its log line's duration) is its own:
    its handler, an equal share of what the batch's events paid once (the savepoints' flushes aside: the commit),
    and its own announcement — the batch's events' times add up to the batch's, and an event's does not grow with
    how many events its batch found (timing each from its start to the batch's end would)."""
    succeeded: list[tuple[dict[str, Any], int, str, SyncResult, float]] = []
    failed: list[str] = []
    batch_started = time.perf_counter()
    own_seconds = 0.0  # the handlers' time, each event's counted in its tuple
    cursor = cast(Any, db.session.connection().connection.driver_connection).cursor()
    for event_id, event, attempts, *_ in claimed:
        event_started = time.perf_counter()
        result = SyncResult(None)
        handler = HANDLERS.get(event["type"])
        if handler is not None:
            db.session.flush()
            cursor.execute(SAVEPOINT)
            try:
                handler(event, result)
                db.session.flush()
            except Exception as error:
                if not db.session.is_active:  # the session rolled its transaction back: the savepoint is gone
                    raise BatchLost(event_id) from error
                cursor.execute(ROLLBACK_TO_SAVEPOINT)  # this event's writes undone; the batch's other events stand
                db.session.expunge_all()
                mark(event_id, status="failed", processed_at=None, error=f"{type(error).__name__}: {error}"[:2000])
                handling_failed(event, attempts, error, event_started)
                failed.append(event_id)
                own_seconds += time.perf_counter() - event_started
                continue
        seconds = time.perf_counter() - event_started
        own_seconds += seconds
        succeeded.append((event, attempts, settled_status(event["type"]), result, seconds))
    try:
        db.session.commit()  # which adds the batch's kept count changes up (migration 0015_drain_batch_counts)
    except Exception as error:
        raise BatchLost(claimed[0].id) from error
    handler_faults = len(failed)
    shared = max(time.perf_counter() - batch_started - own_seconds, 0.0) / len(claimed)
    announce_batch(succeeded, failed, shared)
    return len(succeeded) - (len(failed) - handler_faults), failed


def announce_batch(
    succeeded: list[tuple[dict[str, Any], int, str, SyncResult, float]], failed: list[str], shared: float
) -> None:
    """After a batch's commit: `subscription_changed` for each applied event in order, the receivers' cache writes
    sent together; each event counted and logged as `settle` does, with its handler's seconds (in `succeeded`) plus
    `shared` (its share of the batch's commit) plus its announcement's. A receiver's fault leaves its event applied
    (as `apply`'s does) and adds it to `failed`; the later events are still announced."""
    app = cast(Any, current_app)._get_current_object()  # the app itself, not the request-bound proxy
    writes = CacheWrites()
    try:
        for event, attempts, outcome, result, handled in succeeded:
            # `handling_failed` and the seconds below count from this event's own start
            event_started = time.perf_counter() - handled - shared
            try:
                if result.user_id is not None:
                    subscription_changed.send(app, change=result, writes=writes)
            except Exception as error:
                handling_failed(event, attempts, error, event_started)
                failed.append(event["id"])
                continue
            seconds = time.perf_counter() - event_started
            metrics.record_webhook(metric_type(event["type"]), outcome, seconds)
            applied_log.log(
                logging.INFO,
                "stripe_webhook_handled_successfully",
                event_id=event["id"],
                event_type=event["type"],
                outcome=outcome,
                duration_ms=round(seconds * 1000, 1),
            )
    finally:  # a receiver's fault leaves the caches dropped, as `signals.announce` leaves them
        writes.send()


def handling_failed(event: dict[str, Any], attempts: int, error: Exception, started: float) -> None:
    """Count and log an event whose handler (or a receiver) failed."""
    metrics.record_webhook(metric_type(event["type"]), "failed", time.perf_counter() - started)
    log.error(
        "stripe_webhook_handling_failed",
        event_id=event["id"],
        event_type=event["type"],
        attempts=attempts,
        error=f"{type(error).__name__}: {error}",
    )


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
