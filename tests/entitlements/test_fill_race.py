"""A request that read the database just before a webhook's commit must not store the plan it read once the webhook
has dropped the cache entry: the paid user would be refused Pro features (or a canceled one keep them) until the
entry expires, an hour later.

The webhooks are real: the emulator holds them back, and the test releases them at the moment named, right after the
request under test has read the user's subscriptions (an engine event on this thread), so that the live app applies
them (commit, then the cache writes) between the request's database read and its cache fill. The same interleaving is
then played without the emulator, to show what a flushed Redis and the fresh clone's in-process cache do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
import sqlalchemy as sa

from app import create_app
from app.extensions import cache, db
from app.models import UserSubscription
from app.services.catalog import plan_by_name, seed_plans_from_config
from app.services.entitlements import get_entitlements, invalidate_entitlements_cache
from app.services.signals import SyncResult, commit_billing
from tests.api.conftest import api, contract  # noqa: F401  (the fixtures)
from tests.api.test_subscription_answer import paid_with_webhooks_held, subscription_status, user_id_of
from tests.conftest import empty_database, make_config
from tests.entitlements.conftest import upgrade_page
from tests.factories import UserFactory
from tests.perf.test_webhook_queue_round_trips import pipelined_commands
from tests.perf.test_webhook_round_trips import redis_round_trips

EMAIL = "trader@example.com"


@contextmanager
def after_the_first_subscription_read(app, then: Callable[[], None]) -> Iterator[list[str]]:
    """Within the block, the first statement of this thread that selects `user_subscriptions` rows (the database read
    of the entitlements: `effective_subscription`) is followed, before the request goes on, by `then()`. (The log-in
    session's user loader mentions the table earlier, in a query of users.)"""
    with app.app_context():
        engine = db.engine
    thread = threading.get_ident()
    released: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        if released or threading.get_ident() != thread or not statement.startswith("SELECT user_subscriptions."):
            return
        released.append(statement)
        then()

    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield released
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)


def webhooks_delivered(emulator) -> Callable[[], None]:
    """Deliver every held webhook to the live app, which applies and commits them, and wait until it has answered."""

    def deliver() -> None:
        assert emulator.release() > 0
        emulator.flush()

    return deliver


def cached(store: redis.Redis, user_id: int) -> dict | None:
    raw = store.get(f"entitlements:{user_id}")
    return None if raw is None else json.loads(raw)


def test_a_gate_that_read_before_the_upgrades_commit_leaves_no_free_entry(
    api,  # noqa: F811
    stripe_emulator,
    webhooks_to_app,
    redis_url,
):
    """Checkout for Pro is paid; its webhooks are applied while the API gate (`api_access`) is between its database
    read and its cache fill. That request answers from what it read (403, still Free), but the next one is Pro's."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    paid_with_webhooks_held(api, stripe_emulator, token)
    assert cached(store, user_id) is None  # the gate below misses and reads the database

    with after_the_first_subscription_read(api.app, webhooks_delivered(stripe_emulator)) as released:
        racing = api.get("/strategies", token)
    assert released and racing.status_code == 403  # it read the database before the commit
    assert subscription_status(api.app, user_id) == "active"
    left, generation = cached(store, user_id), store.get(f"entitlements_generation:{user_id}")

    after = api.get("/strategies", token)
    assert after.status_code == 200, after.get_json()
    assert cached(store, user_id)["plan"] == "pro"
    # The racing fill found the generation the webhook's invalidation had written, and stored nothing.
    assert left is None and generation is not None


def test_a_page_that_read_before_the_cancellations_commit_leaves_no_pro_entry(
    api,  # noqa: F811
    auth,
    client,
    stripe_emulator,
    webhooks_to_app,
    redis_url,
):
    """The reverse, in the browser: a Pro member's subscription is canceled in Stripe; its webhook is applied while
    the alerts page's gate (`email_alerts`) is between its database read and its cache fill. That page still shows
    (it read Pro), the next one offers the upgrade."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    checkout = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    stripe_emulator.complete_checkout(checkout.get_json()["session_id"])
    stripe_emulator.flush()
    assert subscription_status(api.app, user_id) == "active"
    with api.app.app_context():
        subscription_id = db.session.scalar(
            sa.select(UserSubscription.stripe_subscription_id).where(UserSubscription.user_id == user_id)
        )
    assert auth.login(EMAIL).status_code == 302
    stripe_emulator.chaos(hold=1)
    stripe_emulator.client().v1.subscriptions.cancel(subscription_id)
    store.delete(f"entitlements:{user_id}")  # whatever the log-in left: the page below misses and reads the database

    with after_the_first_subscription_read(api.app, webhooks_delivered(stripe_emulator)) as released:
        racing = client.get("/alerts/")
    assert released and racing.status_code == 200  # it read the database before the commit: still Pro
    assert subscription_status(api.app, user_id) == "canceled"
    left = cached(store, user_id)

    after = client.get("/alerts/")
    assert upgrade_page(after)["feature"] == "email_alerts"
    assert cached(store, user_id)["plan"] == "free"
    assert left is None


def subscribe_elsewhere(app, user_id: int) -> Callable[[], None]:
    """What a webhook's commit does, from another connection (the request's own is busy), then its invalidation."""

    def commit_and_invalidate() -> None:
        with db.engine.begin() as connection:
            connection.execute(
                sa.insert(UserSubscription).values(
                    user_id=user_id,
                    plan_id=plan_by_name("pro").id,
                    billing_cycle="monthly",
                    status="active",
                    stripe_subscription_id="sub_elsewhere",
                    stripe_price_id="price_pro_monthly",
                )
            )
        invalidate_entitlements_cache(user_id)

    return commit_and_invalidate


def test_a_flush_after_the_invalidation_lets_no_stale_fill_through(seeded, redis_url):
    """The generation is gone when the fill comes (Redis flushed, or the key evicted or expired): what was read
    before the invalidation is not stored, as it would be if a missing generation counted as an unchanged one."""
    store = redis.Redis.from_url(redis_url)
    with seeded.app_context():
        user_id = UserFactory().id
    commit_and_invalidate = subscribe_elsewhere(seeded, user_id)

    def then() -> None:
        commit_and_invalidate()
        store.flushdb()

    with seeded.app_context(), after_the_first_subscription_read(seeded, then) as released:
        assert get_entitlements(user_id)["plan"] == "free"  # read before the commit
    assert released
    left = cached(store, user_id)
    with seeded.app_context():
        assert get_entitlements(user_id)["plan"] == "pro"
    assert cached(store, user_id)["plan"] == "pro"
    assert left is None


def test_without_redis_the_in_process_cache_keeps_no_stale_fill(migrated_database):
    """A fresh clone (no REDIS_URL: SimpleCache in the process) is held to the same rule."""
    app = create_app(make_config(migrated_database, ""))
    try:
        assert app.config["CACHE_TYPE"] == "SimpleCache"
        with app.app_context():
            seed_plans_from_config()
            user_id = UserFactory().id
        with app.app_context(), after_the_first_subscription_read(app, subscribe_elsewhere(app, user_id)) as released:
            assert get_entitlements(user_id)["plan"] == "free"
        with app.app_context():
            assert released
            left = cache.get(f"entitlements:{user_id}")
        with app.app_context():
            assert get_entitlements(user_id)["plan"] == "pro"
            assert json.loads(cache.get(f"entitlements:{user_id}"))["plan"] == "pro"
        assert left is None
    finally:
        empty_database(app)


def test_the_invalidation_replaces_the_generation_before_it_drops_the_entry(seeded, redis_url, monkeypatch):
    """In a billing commit's one pipeline, as on its own: a fill between the two writes finds the new generation,
    and one before them is dropped; the other order would let a fill between them store what it read."""
    with seeded.app_context():
        user_id = UserFactory().id
        with pipelined_commands(monkeypatch) as sent:
            commit_billing(SyncResult(user_id))
            invalidate_entitlements_cache(user_id)
    assert len(sent) == 2
    for pipeline in sent:
        generation = next(n for n, c in enumerate(pipeline) if c[:2] == ("SET", f"entitlements_generation:{user_id}"))
        dropped = next(n for n, c in enumerate(pipeline) if c[0] == "DEL" and f"entitlements:{user_id}" in c[1:])
        assert generation < dropped, pipeline


def test_a_hit_is_one_round_trip_and_a_miss_two(seeded, redis_url, monkeypatch):
    """A hit reads the entry and the generation in one MGET; a miss adds the fill's script (and, finding no
    generation, the round trip that puts one there)."""
    store = redis.Redis.from_url(redis_url)
    with seeded.app_context():
        user_id = UserFactory().id
        get_entitlements(user_id)  # the script loaded, the pools warm
    store.delete(f"entitlements:{user_id}", f"entitlements_generation:{user_id}")
    with seeded.app_context(), redis_round_trips(monkeypatch) as first:
        get_entitlements(user_id)
    store.delete(f"entitlements:{user_id}")
    with seeded.app_context(), redis_round_trips(monkeypatch) as miss:
        get_entitlements(user_id)
    with seeded.app_context(), redis_round_trips(monkeypatch) as hit:
        assert get_entitlements(user_id)["plan"] == "free"
    assert [len(first), len(miss), len(hit)] == [3, 2, 1], (first, miss, hit)
    assert "MGET" in hit[0] and "EVALSHA" in miss[1]
