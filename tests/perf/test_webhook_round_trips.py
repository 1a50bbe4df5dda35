"""Round trips per webhook on the common path: to the database, counted on the engine (statements sent, plus
commits), and to Redis, counted where redis-py sends a command or a pipeline on a connection.

Counted up to the request's commit (mail delivery comes after the response, or in the worker). The floor (verify
and insert) is one; the target is five. Each event's count is its ceiling here, so that none grows unnoticed; the
statement list printed on failure says where they go. Stripe's documented payloads are posted signed through the
app's real endpoint; the first delivery of each event is counted.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import sqlalchemy as sa
from redis.connection import AbstractConnection
from rq.utils import get_version
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.sql.cache_key import HasCacheKey

from app.extensions import db, task_queue
from app.models import User
from app.services.catalog import catalog, seed_plans_from_config
from tests.factories import UserFactory
from tests.webhooks.signing import post_event
from tests.webhooks.test_stripe_docs_events import CUSTOMER, DOCS_PRICE, load

#: Round trips per event (statements and the commit), each a ceiling. The event's row is inserted already marked
#: (no UPDATE after the handler); a subscription event reads its user with its row (a created event: its user alone)
#: in one locked query, and writes the row, its transitions' audit entries, their mail and the user's conversion row
#: in one statement. A payment is audited unless it already is in one statement; a failed payment reads its user's
#: rows with the user, then Stripe's state into them. A completed Checkout asks in one query whether the
#: subscription's row is there or its created event will bring it.
CEILINGS = {
    "customer.subscription.created": 4,
    "checkout.session.completed": 5,
    "invoice.payment_succeeded": 4,
    "customer.subscription.updated": 4,
    "invoice.payment_failed": 5,
    "customer.subscription.deleted": 4,
}


#: How SQLAlchemy says it compiled a statement anew because it could not cache it (its construct has no cache key).
UNCACHEABLE = (CacheStats.NO_CACHE_KEY, CacheStats.CACHING_DISABLED)


@contextlib.contextmanager
def listening(*listeners):
    """SQLAlchemy event listeners, each (target, event name, function), attached while the block runs."""
    for target, name, function in listeners:
        sa.event.listen(target, name, function)
    try:
        yield
    finally:
        for target, name, function in listeners:
            sa.event.remove(target, name, function)


@contextlib.contextmanager
def round_trips(app):
    """Count what reaches PostgreSQL while the block runs: each statement and each commit or rollback."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def statement(conn, cursor, text, params, context, executemany):
        cached = "" if context.cache_hit not in UNCACHEABLE else "UNCACHEABLE "
        sent.append(cached + text.replace("\n", " ")[:400])

    def commit(conn):
        sent.append("COMMIT")

    with listening((engine, "before_cursor_execute", statement), (engine, "commit", commit)):
        yield sent


@pytest.fixture
def docs_customer(app):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER)
    return app


def test_each_common_event_stays_within_its_round_trips(docs_customer, client):
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)  # warms the pool
    with docs_customer.app_context():
        catalog()  # the plan cache, as a running app has it
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
    costs = {}
    for name in CEILINGS:
        with round_trips(docs_customer) as sent:
            assert post_event(client, load(name, user_id), secret).status_code == 200
        costs[name] = sent[: sent.index("COMMIT") + 1]  # the request's transaction; delivery comes after
    over = {name: sent for name, sent in costs.items() if len(sent) > CEILINGS[name]}
    for name, sent in costs.items():
        print(name, len(sent), *sent, sep="\n  ")
    assert over == {}, "FORCE"
    # Each statement is one SQLAlchemy can keep compiled: none is compiled anew at each delivery.
    assert [s for sent in costs.values() for s in sent if s.startswith("UNCACHEABLE")] == []


#: Redis round trips per event, the whole request (its response closed): the duplicate check (EXISTS) before the
#: insert, then, after the commit, one pipeline of the event's `webhook_processed` mark and the user's cache drops
#: (entitlements, plan outlook, billing summary). An event that queues mail adds the SET NX of the
#: `mail_delivery_pending` flag to that same pipeline when the queue is on the cache's Redis, as here and in the
#: deployment guide; the first (the flag was not set) then enqueues the delivery job in a third round trip (RQ's
#: writes in one pipeline), the later ones find that job waiting (no worker runs here) and enqueue none.
REDIS_CEILINGS = {
    "customer.subscription.created": 3,
    "checkout.session.completed": 2,
    "invoice.payment_succeeded": 2,
    "customer.subscription.updated": 2,
    "invoice.payment_failed": 2,
    "customer.subscription.deleted": 2,
}


@contextlib.contextmanager
def redis_round_trips(monkeypatch):
    """Count each packet of commands redis-py sends (one command, or one pipeline) while the block runs."""
    sent: list[str] = []
    original = AbstractConnection.send_packed_command

    def send_packed_command(connection, command, check_health=True):
        packets = command if isinstance(command, list) else [command]
        sent.append(b" ".join(bytes(part)[:60] for part in packets).decode("utf-8", "replace").replace("\r\n", " "))
        return original(connection, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    try:
        yield sent
    finally:
        monkeypatch.setattr(AbstractConnection, "send_packed_command", original)


def test_each_common_event_stays_within_its_redis_round_trips(docs_customer, client, redis_url, monkeypatch):
    docs_customer.config["TASK_QUEUE_URL"] = redis_url  # mail goes to the task queue, as in production
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)  # warms the pools
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
        queue = task_queue()
        assert queue is not None
        get_version(queue.connection)  # and the task queue's connection (RQ reads the server's version once)
    costs = {}
    for name in REDIS_CEILINGS:
        with redis_round_trips(monkeypatch) as sent:
            assert post_event(client, load(name, user_id), secret).status_code == 200
        costs[name] = sent
    for name, sent in costs.items():
        print(name, len(sent), *sent, sep="\n  ")
    assert {name: len(sent) for name, sent in costs.items() if len(sent) > REDIS_CEILINGS[name]} == {}


@contextlib.contextmanager
def cache_keys_computed(monkeypatch):
    """Record each statement whose cache key SQLAlchemy computes while the block runs. A statement built once keeps
    its key (computed at its first execution); one built anew at each call has it computed at each execution."""
    computed: list[str] = []
    original = HasCacheKey._generate_cache_key

    def generate_cache_key(element):
        computed.append(str(element).replace("\n", " ")[:300])
        return original(element)

    monkeypatch.setattr(HasCacheKey, "_generate_cache_key", generate_cache_key)
    try:
        yield computed
    finally:
        monkeypatch.setattr(HasCacheKey, "_generate_cache_key", original)


#: Another customer, with its own subscription, invoices and Checkout Session, for events of the same shapes.
SECOND_CUSTOMER = {
    CUSTOMER: "cus_SecondCustomer01",
    "sub_1MowQVLkdIwHu7ixeRlqHVzs": "sub_SecondSubscription01",
    "in_1MtHb": "in_Second",
    "cs_test_": "cs_test_second",
    "evt_": "evt_second",
}


def second_customers(event: dict) -> dict:
    text = json.dumps(event)
    for theirs, ours in SECOND_CUSTOMER.items():
        text = text.replace(theirs, ours)
    return json.loads(text)


def test_a_second_customers_events_compute_no_statement_cache_key(docs_customer, client, redis_url, monkeypatch):
    """Each statement of the common path is built once (per shape): the second customer's events, of the shapes the
    first one's had, compute no cache key (with a statement built at each call, SQLAlchemy walks the whole of it to
    compute its key before finding it compiled — on the subscription write, most of the write's CPU). Mail goes
    to the task queue, as in production (its delivery is the worker's)."""
    docs_customer.config["TASK_QUEUE_URL"] = redis_url
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    with docs_customer.app_context():
        first = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
        second = UserFactory(email="second@example.com", stripe_customer_id=SECOND_CUSTOMER[CUSTOMER]).id
    for name in CEILINGS:
        assert post_event(client, load(name, first), secret).status_code == 200
    costs = {}
    for name in CEILINGS:
        with cache_keys_computed(monkeypatch) as computed:
            assert post_event(client, second_customers(load(name, second)), secret).status_code == 200
        costs[name] = computed
    for name, computed in costs.items():
        print(name, len(computed), *computed, sep="\n  ")
    assert {name: computed for name, computed in costs.items() if computed} == {}
