"""`get_entitlements`: the effective plan's features, cached as readable JSON, memoized per request, invalidated."""

import json
import logging

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import event

from app import create_app
from app.extensions import db
from app.services.catalog import seed_plans_from_config
from app.services.entitlements import (
    cheapest_plan_with,
    get_entitlements,
    invalidate_entitlements_cache,
)
from tests.conftest import make_config
from tests.entitlements.conftest import cached_json, put_on_plan
from tests.factories import UserFactory
from tests.test_health_and_errors import closed_port

FREE = {
    "plan": "free",
    "strategies_max": 3,
    "backtests_per_month": 20,
    "history_years": 1,
    "indicators": 10,
    "paper_trading": True,
    "strategy_templates": True,
    "community_support": True,
}
PRO = {
    "plan": "pro",
    "strategies_max": None,
    "backtests_per_month": None,
    "history_years": 20,
    "indicators": None,
    "paper_trading": True,
    "email_alerts": True,
    "realtime_alerts": True,
    "api_access": True,
    "priority_support": True,
}


@pytest.fixture
def user_id(seeded):
    with seeded.app_context():
        return UserFactory().id


class QueryCounter:
    def __init__(self, engine):
        self.engine, self.statements = engine, []

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self.record)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self.record)

    def record(self, conn, cursor, statement, *args):
        self.statements.append(statement)


def test_a_user_without_a_subscription_has_the_free_plan(seeded, user_id):
    with seeded.app_context():
        assert get_entitlements(user_id) == FREE


@pytest.mark.parametrize(
    "status, plan",
    [
        ("active", "pro"),
        ("trialing", "pro"),
        ("past_due", "pro"),
        ("canceled", "free"),
        ("unpaid", "free"),
        ("incomplete", "free"),
        ("incomplete_expired", "free"),
        ("paused", "free"),
    ],
)
def test_statuses_that_grant_the_paid_plan(seeded, user_id, status, plan):
    with seeded.app_context():
        put_on_plan(user_id, "pro", status)
        assert get_entitlements(user_id)["plan"] == plan


def test_starter_features(seeded, user_id):
    with seeded.app_context():
        put_on_plan(user_id, "starter")
        entitlements = get_entitlements(user_id)
    assert entitlements["strategies_max"] == 25 and entitlements["backtests_per_month"] == 500
    assert entitlements.allows("email_alerts") and not entitlements.allows("realtime_alerts")
    assert not entitlements.allows("api_access") and entitlements.limit("api_access") == 0


def test_cached_as_readable_json_under_exactly_entitlements_user_id(seeded, user_id, redis_url):
    with seeded.app_context():
        put_on_plan(user_id, "pro")
        get_entitlements(user_id)
    assert cached_json(redis_url, user_id) == PRO
    ttl = redis.Redis.from_url(redis_url).ttl(f"entitlements:{user_id}")
    assert 3500 < ttl <= 3600


def test_the_ttl_comes_from_config(migrated_database, redis_url):
    app = create_app(make_config(migrated_database, redis_url, ENTITLEMENTS_CACHE_TTL="120"))
    try:
        with app.app_context():
            seed_plans_from_config()
            user_id = UserFactory().id
            get_entitlements(user_id)
        assert 0 < redis.Redis.from_url(redis_url).ttl(f"entitlements:{user_id}") <= 120
    finally:
        with app.app_context():
            db.session.execute(sa.text("TRUNCATE users, subscription_plans, plan_features RESTART IDENTITY CASCADE"))
            db.session.commit()
            db.engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()


def test_a_cache_hit_makes_no_database_query(seeded, user_id):
    with seeded.app_context():
        with QueryCounter(db.engine) as miss:
            assert get_entitlements(user_id)["plan"] == "free"
        assert miss.statements, "the first read goes to the database"
    with seeded.app_context():  # a new app context: a new `g`, so only the cache can answer
        with QueryCounter(db.engine) as hit:
            assert get_entitlements(user_id) == FREE
        assert hit.statements == []


def test_a_request_reads_them_at_most_once(seeded, user_id, redis_url):
    with seeded.test_request_context("/strategies/"):
        first = get_entitlements(user_id)
        redis.Redis.from_url(redis_url).set(f"entitlements:{user_id}", json.dumps({"plan": "pro"}))
        assert get_entitlements(user_id) is first  # the memo on `g` answered, not Redis
    with seeded.test_request_context("/strategies/"):
        assert get_entitlements(user_id) == {"plan": "pro"}  # the next request sees the cache


def test_invalidation_makes_the_next_read_see_the_new_plan(seeded, user_id, redis_url):
    with seeded.app_context():
        assert get_entitlements(user_id)["plan"] == "free"
        from app.models import UserSubscription
        from app.services.catalog import plan_by_name

        db.session.add(
            UserSubscription(
                user_id=user_id,
                plan_id=plan_by_name("pro").id,
                billing_cycle="monthly",
                status="active",
                stripe_subscription_id="sub_inv",
            )
        )
        db.session.commit()
    with seeded.app_context():
        assert get_entitlements(user_id)["plan"] == "free"  # still cached: nobody told the cache
        assert invalidate_entitlements_cache(user_id) is True
        assert cached_json(redis_url, user_id) is None
        assert get_entitlements(user_id)["plan"] == "pro"  # the memo was dropped too
    assert cached_json(redis_url, user_id)["plan"] == "pro"


def test_the_cheapest_plan_with_a_feature(seeded):
    with seeded.app_context():
        name = lambda *a, **k: (cheapest_plan_with(*a, **k) or type("none", (), {"name": None})).name  # noqa: E731
        assert name("paper_trading") == "free"
        assert name("email_alerts") == "starter"
        assert name("realtime_alerts") == "pro" and name("api_access") == "pro"
        assert name("strategies_max", at_least=3) == "free"
        assert name("strategies_max", at_least=4) == "starter"
        assert name("strategies_max", at_least=26) == "pro"
        assert name("history_years", at_least=5) == "starter"
        assert name("history_years", at_least=21) is None
        assert name("no_such_feature") is None


def test_redis_down_falls_back_to_the_database_and_logs_once(migrated_database, redis_url, caplog):
    app = create_app(make_config(migrated_database, f"redis://127.0.0.1:{closed_port()}/0"))
    try:
        with caplog.at_level(logging.WARNING):
            with app.app_context():
                seed_plans_from_config()
                user_id = UserFactory().id
                put_on_plan(user_id, "starter")  # the invalidation fails quietly (logged), never raises
            for _ in range(3):
                with app.app_context():
                    assert get_entitlements(user_id)["plan"] == "starter"
                app.extensions["entitlements_cache"].skip_until = 0  # try Redis again each time
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("entitlements_cache_unavailable") for m in messages) == 1, messages
        assert sum(m.startswith("entitlements_cache_invalidate_failed") for m in messages) == 1, messages
    finally:
        with app.app_context():
            db.session.execute(sa.text("TRUNCATE users, subscription_plans, plan_features RESTART IDENTITY CASCADE"))
            db.session.commit()
            db.engine.dispose()
