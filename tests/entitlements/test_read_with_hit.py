"""The API gate reads the user's entitlements with the rate limit's hit: one Redis round trip for both on a hit.

Every API route counts a per-user limit in one Lua script on Redis (`HitWindowRateLimiter`); on a gated route whose
limiter shares the cache's Redis, that script also reads the user's entry and generation, and the gate takes them from
the request instead of making its own MGET. These tests run the real app on the suite's Redis and PostgreSQL: round
trips are counted at redis-py's connection (every packet sent), commands as the server runs them by MONITOR.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from app import create_app
from app.extensions import cache, db
from app.services.catalog import seed_plans_from_config
from app.services.entitlements import get_entitlements
from tests.api.conftest import api, contract  # noqa: F401  (the fixtures)
from tests.api.test_subscription_answer import user_id_of
from tests.conftest import empty_database, make_config
from tests.entitlements.conftest import put_on_plan
from tests.entitlements.test_fill_race import cached, subscribe_elsewhere
from tests.factories import UserFactory
from tests.perf.test_webhook_round_trips import redis_round_trips

EMAIL, OTHER_EMAIL = "trader@example.com", "other@example.com"


def on_plan(app, user_id: int, plan: str) -> None:
    with app.app_context():
        put_on_plan(user_id, plan)


@contextmanager
def monitored(redis_url: str) -> Iterator[list[str]]:
    """Every command the Redis server runs on `redis_url`'s db while the block runs (scripts' own commands included,
    marked `lua`), as MONITOR shows them: `[db client] NAME arg …`. MONITOR shows every db's: the other test
    processes' commands, on dbs of their own, are left out."""
    watcher = redis.Redis.from_url(redis_url)
    own_db = watcher.connection_pool.connection_kwargs.get("db", 0)
    marker = f"end-of-block-{uuid.uuid4().hex}"
    commands: list[str] = []
    with watcher.monitor() as monitor:
        yield commands
        redis.Redis.from_url(redis_url).echo(marker)
        for command in monitor.listen():
            if marker in command["command"]:
                break
            if int(command["db"]) != int(own_db):
                continue
            commands.append(f"[{command['db']} {command['client_type']}] {command['command']}")


def between_the_hit_and_the_gate(app, then: Callable[[], None]) -> list[bool]:
    """Run `then()` once, in the next request, after the rate limiter's before-request check (which counted the hit)
    and before the view's gate: a hook of the app's own, after the limiter's (the app served requests already, so it
    is added to the list itself; the changed app is thrown away after the test)."""
    ran: list[bool] = []

    def hook() -> None:
        if not ran:
            ran.append(True)
            then()

    app.before_request_funcs.setdefault(None, []).append(hook)
    return ran


def in_another_thread(app, work: Callable[[], None]) -> Callable[[], None]:
    """`work` in a thread of its own with its own app context, as another worker process would run it (it shares
    nothing of the request's), and waited for."""

    def run() -> None:
        def target() -> None:
            with app.app_context():
                work()

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    return run


def test_a_gated_api_call_on_a_cache_hit_makes_one_redis_round_trip(api, redis_url, monkeypatch):  # noqa: F811
    """The limiter's script counts the hit and reads the entry and the generation: the gate makes no MGET."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    on_plan(api.app, user_id, "pro")
    warm = api.get("/strategies", token)  # fills the cache, loads the scripts, warms the pools
    assert warm.status_code == 200 and cached(store, user_id)["plan"] == "pro"

    # What this process sends (not the server's command statistics: they count every test process's MGETs).
    with redis_round_trips(monkeypatch) as sent:
        response = api.get("/strategies", token)
    assert response.status_code == 200, response.get_json()
    # The limit counted this call, and its headers came with the hit.
    assert int(response.headers["X-RateLimit-Remaining"]) == int(warm.headers["X-RateLimit-Remaining"]) - 1
    assert len(sent) == 1 and "EVALSHA" in sent[0], sent
    assert not any("MGET" in packet for packet in sent), sent


def test_a_miss_fills_with_the_generation_the_hit_read(api, redis_url, monkeypatch):  # noqa: F811
    """On a miss the gate reads the database and fills by the compare-and-set, with the generation the limiter's
    script read: the hit's script and the fill's, two round trips (three with the gate's own MGET)."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    on_plan(api.app, user_id, "pro")
    assert api.get("/strategies", token).status_code == 200
    store.delete(f"entitlements:{user_id}")

    with redis_round_trips(monkeypatch) as sent:
        assert api.get("/strategies", token).status_code == 200
    assert len(sent) == 2 and all("EVALSHA" in packet for packet in sent), sent
    assert cached(store, user_id)["plan"] == "pro"


def test_an_upgrade_between_the_hit_and_the_gate_shows_on_the_next_call(api, redis_url):  # noqa: F811
    """Another process commits Pro and invalidates after the limiter's script read the Free entry and before the
    gate: that call answers from what was read (as it would had the invalidation come just after the gate's own
    MGET), the next one is Pro's and caches Pro."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    assert api.get("/strategies", token).status_code == 403
    assert cached(store, user_id)["plan"] == "free"

    ran = between_the_hit_and_the_gate(api.app, in_another_thread(api.app, subscribe_elsewhere(api.app, user_id)))
    racing = api.get("/strategies", token)
    assert ran and racing.status_code == 403  # read before the invalidation: Free, as the hit read it
    assert cached(store, user_id) is None

    after = api.get("/strategies", token)
    assert after.status_code == 200, after.get_json()
    assert cached(store, user_id)["plan"] == "pro"


def test_an_invalidation_in_the_request_itself_drops_what_the_hit_read(api, redis_url):  # noqa: F811
    """The request's own billing change (commit, then invalidation) after the hit: the gate reads the database, not
    the Free entry the hit read before it."""
    store = redis.Redis.from_url(redis_url)
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    assert api.get("/strategies", token).status_code == 403
    assert cached(store, user_id)["plan"] == "free"

    ran = between_the_hit_and_the_gate(api.app, lambda: put_on_plan(user_id, "pro"))
    response = api.get("/strategies", token)
    assert ran and response.status_code == 200, response.get_json()
    assert cached(store, user_id)["plan"] == "pro"


def test_a_browser_session_lends_the_api_neither_its_limit_nor_its_plan(api, auth, redis_url):  # noqa: F811
    """A browser logged in as a Pro user calls the API with a Free user's token: the API never looks at the session
    cookie, so the limit counts the token's user (the cookie's user was counted before), the hit reads that user's
    entitlements, and the gate refuses from them with no read of its own."""
    store = redis.Redis.from_url(redis_url)
    pro_token = api.user(EMAIL)
    pro_id = user_id_of(api.app, EMAIL)
    free_token = api.user(OTHER_EMAIL)
    free_id = user_id_of(api.app, OTHER_EMAIL)
    on_plan(api.app, pro_id, "pro")
    assert api.get("/strategies", pro_token).status_code == 200
    assert api.get("/strategies", free_token).status_code == 403
    assert auth.login(EMAIL).status_code == 302  # the session cookie goes with the API calls below

    with monitored(redis_url) as commands:
        response = api.get("/strategies", free_token)
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["feature"] == "api_access"
    hits = [c.split()[2:] for c in commands if "EVALSHA" in c]
    assert len(hits) == 1 and f"entitlements:{free_id}" in hits[0], commands  # the token's user's entry
    assert any(f"user:{free_id}/" in part for part in hits[0]), commands  # whom the limit counted
    assert not any(f"user:{pro_id}/" in part for part in hits[0]), commands
    assert [c for c in commands if "MGET" in c] == [], commands  # the gate used what the hit read
    assert cached(store, free_id)["plan"] == "free" and cached(store, pro_id)["plan"] == "pro"


def test_a_limiter_on_another_redis_db_leaves_the_gate_its_own_read(migrated_database, redis_url, monkeypatch):
    """The limiter's Redis is not the cache's (another db of the same server): its script reads nothing more, and the
    gate reads the cache's db itself, whatever the limiter's db holds under the same key."""
    own_db = int(redis_url.rsplit("/", 1)[1] or 0)
    # A db no test process uses (the suite's processes use 0, 1, 2): keys written there collide with no test's.
    limiter_url = redis_url.rsplit("/", 1)[0] + f"/{15 if own_db != 15 else 14}"
    prefix = f"gate-test-{uuid.uuid4().hex}"
    app = create_app(make_config(migrated_database, limiter_url, RATELIMIT_KEY_PREFIX=prefix))
    cache.init_app(app, config={**app.config, "CACHE_REDIS_URL": redis_url})
    limiter_store, cache_store = redis.Redis.from_url(limiter_url), redis.Redis.from_url(redis_url)
    user_id = 0
    try:
        with app.app_context():
            seed_plans_from_config()
            user_id = UserFactory(email=EMAIL).id
            db.session.commit()
            assert get_entitlements(user_id)["plan"] == "free"  # cached in the cache's db
        # What the limiter's db holds under the user's keys (a Pro entry) must not count.
        limiter_store.set(f"entitlements:{user_id}", json.dumps({"plan": "pro", "api_access": True}))
        limiter_store.set(f"entitlements_generation:{user_id}", "not-the-cache's")
        client = app.test_client()
        token = client.post("/api/v1/auth/token", json={"email": EMAIL, "password": "correct horse"})
        headers = {"Authorization": f"Bearer {token.get_json()['access_token']}"}
        assert client.get("/api/v1/strategies", headers=headers).status_code == 403  # warms the pools

        with redis_round_trips(monkeypatch) as sent:
            response = client.get("/api/v1/strategies", headers=headers)
        assert response.status_code == 403, response.get_json()
        assert len(sent) == 2 and "EVALSHA" in sent[0] and "MGET" in sent[1], sent
        assert limiter_store.keys(f"LIMITS:LIMITER/{prefix}/user:{user_id}/*")  # the limit counted there

        with app.app_context():
            put_on_plan(user_id, "pro")  # invalidates in the cache's db
        assert client.get("/api/v1/strategies", headers=headers).status_code == 200
        assert cached(cache_store, user_id)["plan"] == "pro"
    finally:
        for key in limiter_store.scan_iter(f"LIMITS:LIMITER/{prefix}/*"):
            limiter_store.delete(key)
        limiter_store.delete(f"entitlements:{user_id}", f"entitlements_generation:{user_id}")
        cache_store.flushdb()
        empty_database(app)
