"""Round trips in queue mode (WEBHOOK_APPLY=queue): the endpoint's, and its job's.

Counted as psycopg sends them: a BEGIN before the first statement of a transaction (a round trip of its own), each
statement, a COMMIT or ROLLBACK when a transaction is open on the server (psycopg sends none otherwise: a commit
after autocommit statements costs nothing). The endpoint records a new event in one statement in autocommit: one
round trip, where a transaction would cost three (BEGIN, INSERT, COMMIT). The job's are counted as
tests/perf/test_webhook_round_trips.py counts the request's in request mode (statements and the commit), and stay
within the same ceilings: the claim (one UPDATE) takes the place of the insert.
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from app.extensions import db, task_queue
from app.models import User
from app.services.catalog import catalog
from app.tasks import apply_webhook_event
from tests.perf.test_webhook_round_trips import CEILINGS, docs_customer, listening, redis_round_trips, round_trips
from tests.webhooks.signing import post_event
from tests.webhooks.test_queue_mode import drain, queue_mode
from tests.webhooks.test_stripe_docs_events import CUSTOMER, load

__all__ = ["docs_customer"]  # the fixture, shared with the request mode's counts

#: The endpoint's round trips: a new event's insert; a known event's insert, then its status.
ENDPOINT_CEILING = {"new": 1, "known": 2}


@contextlib.contextmanager
def wire_round_trips(app):
    """Count what psycopg sends PostgreSQL while the block runs: BEGIN, each statement, COMMIT and ROLLBACK."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def statement(conn, cursor, text, params, context, executemany):
        driver = conn.connection.driver_connection
        if not driver.autocommit and driver.info.transaction_status == TransactionStatus.IDLE:
            sent.append("BEGIN")
        sent.append(text.replace("\n", " ")[:300])

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


def test_the_endpoint_makes_one_redis_round_trip(docs_customer, client, redis_url, monkeypatch):
    """The job, enqueued in one pipeline (RQ's writes: the job, the queue's list); no duplicate look-up first."""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)  # warms the pools (RQ reads the server's version once)
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs = {}
    for name in CEILINGS:
        with redis_round_trips(monkeypatch) as sent:
            assert post_event(client, load(name, user_id), secret).get_json()["status"] == "queued"
        costs[name] = sent
    for name, sent in costs.items():
        print(name, len(sent), *sent, sep="\n  ")
    assert {name: len(sent) for name, sent in costs.items()} == dict.fromkeys(CEILINGS, 1)


def test_the_job_stays_within_the_request_modes_round_trips(docs_customer, client, redis_url, monkeypatch):
    """The job as the worker runs it: the claim, the handler's statements, the commit (then one Redis pipeline:
    the `webhook_processed` mark, the user's cache drops and, for mail, the delivery job)."""
    queue_mode(docs_customer, redis_url)
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)
    drain(docs_customer)  # warms the pools
    with docs_customer.app_context():
        catalog()  # the plan cache, as a running worker has it
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs, redis_costs = {}, {}
    for name in CEILINGS:
        event = load(name, user_id)
        assert post_event(client, event, secret).get_json()["status"] == "queued"
        with docs_customer.app_context():
            task_queue().empty()  # the job runs here, counted
        with round_trips(docs_customer) as sent, redis_round_trips(monkeypatch) as redis_sent:
            with docs_customer.app_context():
                assert apply_webhook_event(event["id"], event["type"]) == "processed"
        costs[name] = sent
        redis_costs[name] = redis_sent
    for name, sent in costs.items():
        print(name, len(sent), *sent, *redis_costs[name], sep="\n  ")
    assert sum(len(sent) for sent in costs.values()) > 0
    assert {name: len(sent) for name, sent in costs.items() if len(sent) > CEILINGS[name]} == {}
    assert all(sent[0].startswith("UPDATE stripe_events") for sent in costs.values())
    assert {name: len(sent) for name, sent in redis_costs.items()} == dict.fromkeys(CEILINGS, 1)
