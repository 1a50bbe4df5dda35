"""Round trips in queue mode (WEBHOOK_APPLY=queue): the endpoint's, and its drain's per event.

Counted as psycopg sends them: a BEGIN before the first statement of a transaction (a round trip of its own), each
statement, a COMMIT or ROLLBACK when a transaction is open on the server (psycopg sends none otherwise: a commit
after autocommit statements costs nothing). The endpoint records a new event in one statement in autocommit: one
round trip, where a transaction would cost three (BEGIN, INSERT, COMMIT). The job's are counted as
tests/perf/test_webhook_round_trips.py counts the request's in request mode (statements and the commit), and stay
makes exactly the request's counts: the claim (one UPDATE, the oldest received event, SKIP LOCKED) takes the place of the
insert. The drain's CPU per event is held down by what these tests pin: a claim whose compiled form is cached whole (no
cache key computed per event), one Redis pipeline per event without the `webhook_processed` mark queue mode never
reads, and the mails' billing URL built once per worker, not in a request context of its own per mail.
"""

from __future__ import annotations

import contextlib
import json

import sqlalchemy as sa
from flask import Flask
from psycopg.pq import TransactionStatus
from redis.client import Pipeline
from sqlalchemy.orm import Session

from app.extensions import db, task_queue
from app.models import MailOutbox, StripeEvent, User, utcnow
from app.services.catalog import catalog
from app.services.mail import DELIVERY_PENDING_KEY, billing_url
from app.services.webhooks import CLAIM_NEXT_EVENT, CLAIM_NEXT_EVENT_SQL, DRAIN_PENDING_KEY, drain_lane
from app.tasks import apply_webhook_events
from tests.factories import UserFactory
from tests.perf.test_logged_in_pages import calls_of
from tests.perf.test_webhook_round_trips import (
    CEILINGS,
    SECOND_CUSTOMER,
    cache_keys_computed,
    docs_customer,
    listening,
    redis_round_trips,
    round_trips,
    second_customers,
)
from tests.webhooks.signing import post_event
from tests.webhooks.test_queue_mode import drain, queue_mode
from tests.webhooks.test_stripe_docs_events import CUSTOMER, load

__all__ = ["docs_customer"]  # the fixture, shared with the request mode's counts

#: The endpoint's round trips: a new event's insert; a known event's insert, then its status.
ENDPOINT_CEILING = {"new": 1, "known": 2}


@contextlib.contextmanager
def wire_round_trips(app, whole: bool = False):
    """Count what psycopg sends PostgreSQL while the block runs: BEGIN, each statement, COMMIT and ROLLBACK (BEGIN
    before the first statement of a transaction, COMMIT and ROLLBACK when one is open on the server). Each
    statement's first 300 characters, or its whole text on one line (`whole`)."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def statement(conn, cursor, text, params, context, executemany):
        driver = conn.connection.driver_connection
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            sent.append("BEGIN")
        sent.append(" ".join(text.split()) if whole else text.replace("\n", " ")[:300])

    def ending(name):
        def end(conn):
            if conn.connection.driver_connection.info.transaction_status != TransactionStatus.IDLE:
                sent.append(name)

        return end

    with listening(
        (engine, "before_cursor_execute", statement),
        (engine, "commit", ending("COMMIT")),
        (engine, "rollback", ending("ROLLBACK")),
    ):
        yield sent


def test_the_endpoint_records_a_new_event_in_one_round_trip_and_a_known_one_in_two(docs_customer, client, redis_url):
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    assert post_event(client, load("customer.updated"), secret).get_json()["status"] == "queued"  # warms the pool
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs = {}
    for name in CEILINGS:
        with wire_round_trips(docs_customer) as sent:
            assert post_event(client, load(name, user_id), secret).get_json()["status"] == "queued"
        costs[name] = sent
    name = "customer.subscription.created"
    with wire_round_trips(docs_customer) as sent:  # redelivered before its job ran
        assert post_event(client, load(name, user_id), secret).get_json()["status"] == "queued"
    costs["redelivered"] = sent
    drain(docs_customer)
    with wire_round_trips(docs_customer) as sent:  # redelivered once applied
        assert post_event(client, load(name, user_id), secret).get_json()["status"] == "duplicate"
    costs["duplicate"] = sent
    for case, sent in costs.items():
        print(case, len(sent), *sent, sep="\n  ")
    assert {case: len(sent) for case, sent in costs.items() if case in CEILINGS} == dict.fromkeys(CEILINGS, 1)
    assert len(costs["redelivered"]) == len(costs["duplicate"]) == ENDPOINT_CEILING["known"]
    assert all(sent[0].startswith("INSERT INTO stripe_events") for sent in costs.values())


def test_the_endpoint_makes_one_redis_round_trip_while_a_drain_is_pending_two_to_enqueue_one(
    docs_customer, client, redis_url, monkeypatch
):
    """SET NX of the event's lane's `webhook_drain_pending` flag; only when it was not set (no drain of the lane
    pending), the drain's job, enqueued in one pipeline (RQ's writes: the job, the queue's list). No duplicate
    look-up first."""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)  # warms the pools (RQ reads the server's version once)
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs, pending_before = {}, {}
    for name in CEILINGS:
        event = load(name, user_id)
        flag = DRAIN_PENDING_KEY.format(drain_lane(event["id"]))
        with docs_customer.app_context():
            pending_before[name] = bool(task_queue().connection.exists(flag))
        with redis_round_trips(monkeypatch) as sent:
            assert post_event(client, event, secret).get_json()["status"] == "queued"
        costs[name] = sent
    for name, sent in costs.items():
        print(name, len(sent), *sent, sep="\n  ")
    assert {name: len(sent) for name, sent in costs.items()} == {
        name: 1 if pending else 2 for name, pending in pending_before.items()
    }
    assert all(sent[0].startswith(f"*6 $3 SET ${len('webhook_drain_pending:0')}") for sent in costs.values())
    assert True in pending_before.values() and False in pending_before.values()  # both cases counted
    # Every lane now has its drain pending: a burst costs each event one round trip.
    with docs_customer.app_context():
        flags = [DRAIN_PENDING_KEY.format(lane) for lane in range(4)]
        task_queue().connection.mset(dict.fromkeys(flags, 1))
    for name in CEILINGS:
        event = {**load(name, user_id), "id": f"evt_burst_{name}"}
        with redis_round_trips(monkeypatch) as sent:
            assert post_event(client, event, secret).get_json()["status"] == "queued"
        assert len(sent) == 1, sent


@contextlib.contextmanager
def pipelined_commands(monkeypatch):
    """The commands of each Redis pipeline executed while the block runs, each as its name and arguments."""
    sent: list[list[tuple[str, ...]]] = []
    original = Pipeline.execute

    def execute(pipeline, *args, **kwargs):
        sent.append([tuple(str(part) for part in command) for command, _ in pipeline.command_stack])
        return original(pipeline, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", execute)
    try:
        yield sent
    finally:
        monkeypatch.setattr(Pipeline, "execute", original)


@contextlib.contextmanager
def orm_executions():
    """The statements the session runs through its ORM execution (`do_orm_execute`) while the block runs."""
    executed: list[str] = []

    def executing(state):
        executed.append(str(state.statement).replace("\n", " ")[:300])

    with listening((Session, "do_orm_execute", executing)):
        yield executed


def test_the_drain_makes_the_request_modes_round_trips_per_event(docs_customer, client, redis_url, monkeypatch):
    """The drain as the worker runs it, per event: the claim, the handler's statements, the commit — as many as the
    request's in request mode, no more (then one Redis pipeline: the user's cache drops and, for mail, the delivery
    job; no `webhook_processed` mark, which queue mode never reads); once none is left, one claim that finds nothing
    (and its rollback)."""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)
    drain(docs_customer)  # warms the pools
    with docs_customer.app_context():
        catalog()  # the plan cache, as a running worker has it
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs, redis_costs, pipelines, orm_claims, enqueued = {}, {}, {}, {}, {}
    for name in CEILINGS:
        event = load(name, user_id)
        assert post_event(client, event, secret).get_json()["status"] == "queued"
        with docs_customer.app_context():
            task_queue().empty()  # the drain runs here, counted
        with round_trips(docs_customer) as sent, redis_round_trips(monkeypatch) as redis_sent:
            with pipelined_commands(monkeypatch) as pipelined, orm_executions() as through_orm:
                with docs_customer.app_context():
                    assert apply_webhook_events(drain_lane(event["id"])) == 1
        costs[name] = sent
        redis_costs[name] = redis_sent
        pipelines[name] = pipelined
        with docs_customer.app_context():
            enqueued[name] = [job.func_name for job in task_queue().get_jobs()]
        orm_claims[name] = [text for text in through_orm if text.startswith("UPDATE stripe_events")]
    for name, sent in costs.items():
        print(name, len(sent), *sent, *redis_costs[name], sep="\n  ")
    # The drain's end: one claim finding nothing (its rollback is not counted: nothing was begun on the server).
    assert all(sent[-1].startswith("UPDATE stripe_events") for sent in costs.values())
    per_event = {name: sent[:-1] for name, sent in costs.items()}
    assert sum(len(sent) for sent in per_event.values()) > 0
    assert {name: len(sent) for name, sent in per_event.items()} == CEILINGS
    assert all(sent[0].startswith("UPDATE stripe_events SET status = CASE") for sent in per_event.values())
    assert [s for sent in costs.values() for s in sent if s.startswith("UNCACHEABLE")] == []
    # The claim goes to the session's connection, not through the session's ORM execution (a third of its CPU).
    assert orm_claims == dict.fromkeys(CEILINGS, [])
    # Redis: the flag's DEL as the drain starts, the event's pipeline after its commit (with the SET NX of
    # `mail_delivery_pending` when it queued mail); the first mail's delivery job, enqueued in a third (its own
    # pipeline), and none for the later ones: the job waiting (never run here) sends them all.
    mailing = [name for name, pipelined in pipelines.items() if any(DELIVERY_PENDING_KEY in c for c in pipelined[0])]
    assert mailing[0] == "customer.subscription.created" and len(mailing) > 1
    assert {name: jobs for name, jobs in enqueued.items() if jobs} == {mailing[0]: ["app.tasks.deliver_mail"]}
    assert {name: len(sent) for name, sent in redis_costs.items()} == {
        name: 3 if name == mailing[0] else 2 for name in CEILINGS
    }
    assert all(sent[0].startswith("*2 $3 DEL") for sent in redis_costs.values())
    assert {name: len(pipelined) for name, pipelined in pipelines.items()} == {
        name: 2 if name == mailing[0] else 1 for name in CEILINGS
    }
    commands = [command for pipelined in pipelines.values() for command in pipelined[0]]
    assert [command for command in commands if any("webhook_processed" in part for part in command)] == []
    # The user's cache drops, in one DEL (one command to pack, one reply to read, however many caches).
    deletes = {
        name: [command for command in pipelined[0] if command[0] == "DEL"] for name, pipelined in pipelines.items()
    }
    assert {name: len(found) for name, found in deletes.items()} == dict.fromkeys(CEILINGS, 1)
    assert all(f"entitlements:{user_id}" in found[0] for found in deletes.values())
    assert all(any(part.endswith(f"plan_outlook:{user_id}") for part in found[0]) for found in deletes.values())


def test_the_drain_computes_no_statement_cache_key_per_event(docs_customer, client, redis_url, monkeypatch):
    """Each statement the drain sends per event — its claim, the handlers' — is built once: a second customer's
    events, of the shapes the first one's had, compute no cache key. (The claim written as an ORM UPDATE computed
    its key, and expanded its list of handled types, at each event: about half of the claim's CPU.)"""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    with docs_customer.app_context():
        catalog()
        first = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
        second = UserFactory(email="second@example.com", stripe_customer_id=SECOND_CUSTOMER[CUSTOMER]).id
    for name in CEILINGS:
        assert post_event(client, load(name, first), secret).get_json()["status"] == "queued"
    drain(docs_customer)
    costs = {}
    for name in CEILINGS:
        event = second_customers(load(name, second))
        assert post_event(client, event, secret).get_json()["status"] == "queued"
        with docs_customer.app_context():
            task_queue().empty()
        with cache_keys_computed(monkeypatch) as computed, docs_customer.app_context():
            assert apply_webhook_events(drain_lane(event["id"])) == 1
        costs[name] = computed
    for name, computed in costs.items():
        print(name, len(computed), *computed, sep="\n  ")
    assert {name: computed for name, computed in costs.items() if computed} == {}


def test_the_drain_builds_the_mails_billing_url_once(docs_customer, client, redis_url):
    """Outside a request, `billing_url` builds a request context of its own for its `url_for`: the drain's mails
    (an activation's, an end's) take the worker's address, built once, not once per mail."""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    for name in ("customer.subscription.created", "customer.subscription.deleted"):
        assert post_event(client, load(name, user_id), secret).get_json()["status"] == "queued"
    for n in range(3):  # three more customers, each activated
        with docs_customer.app_context():
            other = UserFactory(email=f"other{n}@example.com", stripe_customer_id=f"cus_Other{n}").id
        text = json.dumps(load("customer.subscription.created", other))
        text = text.replace(CUSTOMER, f"cus_Other{n}").replace("sub_1Mo", f"sub_Other{n}_1Mo")
        assert post_event(client, {**json.loads(text), "id": f"evt_other_{n}"}, secret).get_json()["status"] == "queued"
    with docs_customer.app_context():
        task_queue().empty()

    def drain_every_lane():
        with docs_customer.app_context():
            for lane in range(4):
                apply_webhook_events(lane)

    assert calls_of(Flask.test_request_context, drain_every_lane) <= 1
    with docs_customer.app_context():
        assert set(db.session.scalars(sa.select(StripeEvent.status))) == {"processed"}
        bodies = list(db.session.scalars(sa.select(MailOutbox.body)))
        expected = billing_url()
    assert len(bodies) >= 5
    assert all(expected in body for body in bodies)


def test_the_drains_claim_reads_the_status_index_and_skips_locked_rows(app):
    """The claim finds the oldest `received` event through ix_stripe_events_status_received_at (not a scan of every
    event ever received: the table keeps them all), and passes over rows another drain holds."""
    with app.app_context():
        db.session.execute(
            sa.text(
                "INSERT INTO stripe_events (id, type, livemode, stripe_created, received_at, payload, status, attempts) "
                "SELECT 'evt_old_' || n, 'customer.updated', false, now(), now() - n * interval '1 second', '{}', "
                "CASE WHEN n % 1000 = 0 THEN 'received' ELSE 'processed' END, 1 FROM generate_series(1, 20000) n"
            )
        )
        db.session.execute(sa.text("ANALYZE stripe_events"))
        claim = CLAIM_NEXT_EVENT_SQL[db.engine.dialect.name]
        assert "FOR UPDATE SKIP LOCKED" in str(claim.compile(dialect=db.engine.dialect))
        assert "FOR UPDATE SKIP LOCKED" in str(CLAIM_NEXT_EVENT.compile(dialect=db.engine.dialect))

        sent: list[tuple[str, object]] = []

        def capture(conn, cursor, statement, parameters, context, executemany):
            sent.append((statement, parameters))

        with listening((db.engine, "before_cursor_execute", capture)):
            db.session.execute(claim, {"now": utcnow()})  # the claim as sent (rolled back below)
        statement, parameters = sent[0]
        plan = "\n".join(row[0] for row in db.session.connection().exec_driver_sql("EXPLAIN " + statement, parameters))
        db.session.rollback()
    print(plan)
    assert "ix_stripe_events_status_received_at" in plan
    assert "Seq Scan" not in plan
