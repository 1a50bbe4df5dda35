"""ORM entities loaded per webhook on the common path: a handler that only reads a few values (the user's id) reads
them as rows, not as entities (identity map, instance state, attribute instrumentation: most of the handler's CPU).

Each event's count is its ceiling here, so that none grows unnoticed. Stripe's documented payloads are posted
signed through the app's real endpoint, on PostgreSQL; the first delivery of each event is counted.
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

from app.extensions import db
from app.models import User
from app.services.catalog import catalog
from tests.perf.test_webhook_round_trips import docs_customer, listening  # noqa: F401  (docs_customer: the fixture)
from tests.webhooks.signing import post_event
from tests.webhooks.test_stripe_docs_events import load

#: Entities loaded into the session per event, each a ceiling. A payment and a completed Checkout are audited by the user's
#: id alone; a subscription event reads its user's id and email and its row as values, its plan from the cached
#: catalog, and writes the row, its audit entries and its mail with statements of their own.
CEILINGS = {
    "customer.subscription.created": 0,
    "checkout.session.completed": 0,
    "invoice.payment_succeeded": 0,
    "customer.subscription.updated": 0,
    "customer.subscription.deleted": 0,
}


@contextlib.contextmanager
def entities_loaded(app):
    """The class name of each entity loaded from a row while the block runs, and COMMIT where the database
    commits (what comes after the request's commit, mail delivery, is not the handler's)."""
    loaded: list[str] = []
    with app.app_context():
        engine = db.engine

    def on_load(target, context):
        loaded.append(type(target).__name__)

    def commit(conn):
        loaded.append("COMMIT")

    with listening((Mapper, "load", on_load), (engine, "commit", commit)):
        yield loaded


def test_each_common_event_loads_at_most_its_entities(docs_customer, client):  # noqa: F811
    secret = docs_customer.config["STRIPE_WEBHOOK_SECRET"]
    post_event(client, load("customer.updated"), secret)  # warms the pool
    with docs_customer.app_context():
        catalog()  # the plan cache, as a running app has it
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id.isnot(None)))
    costs = {}
    for name in CEILINGS:
        with entities_loaded(docs_customer) as loaded:
            assert post_event(client, load(name, user_id), secret).status_code == 200
        costs[name] = loaded[: loaded.index("COMMIT")]
    print(costs)
    assert {name: loaded for name, loaded in costs.items() if len(loaded) > CEILINGS[name]} == {}
