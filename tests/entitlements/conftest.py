"""Helpers for the entitlement tests: users on a plan, strategies and backtests written straight to the database.

A paid plan is a `UserSubscription` row, as `sync_customer` would write it from Stripe.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Backtest, Strategy, UserSubscription
from app.services.catalog import plan_by_name
from app.services.entitlements import invalidate_entitlements_cache
from tests.factories import UserFactory

_ids = itertools.count(1)


def put_on_plan(user_id: int, plan: str, status: str = "active") -> None:
    """Give the user a subscription to `plan` (no row at all for Free), then invalidate as billing does."""
    db.session.execute(sa.delete(UserSubscription).where(UserSubscription.user_id == user_id))
    if plan != "free":
        db.session.add(
            UserSubscription(
                user_id=user_id,
                plan_id=plan_by_name(plan).id,
                billing_cycle="monthly",
                status=status,
                stripe_subscription_id=f"sub_test_{next(_ids)}",
                stripe_price_id=f"price_{plan}_monthly",
            )
        )
    db.session.commit()
    invalidate_entitlements_cache(user_id)


def add_strategies(user_id: int, n: int, start: datetime | None = None) -> list[int]:
    """`n` strategies, one a minute apart (so "oldest first" is well defined)."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        Strategy(
            user_id=user_id, name=f"Strategy {i + 1}", rules="fast=10 slow=30", created_at=start + timedelta(minutes=i)
        )
        for i in range(n)
    ]
    db.session.add_all(rows)
    db.session.commit()
    return [r.id for r in rows]


def add_backtests(user_id: int, strategy_id: int | None, n: int, when: datetime | None = None) -> None:
    """`n` stored runs (this month unless `when` says otherwise)."""
    when = when or datetime.now(UTC)
    db.session.execute(
        sa.insert(Backtest),
        [
            {
                "user_id": user_id,
                "strategy_id": strategy_id,
                "start_date": datetime(2025, 1, 2).date(),
                "end_date": datetime(2025, 12, 31).date(),
                "result": {},
                "created_at": when,
            }
            for _ in range(n)
        ],
    )
    db.session.commit()


class Member:
    """A logged-in user of the test client, on a plan."""

    def __init__(self, app, client, auth, email: str, plan: str):
        self.app, self.client, self.auth, self.email = app, client, auth, email
        with app.app_context():
            self.id = UserFactory(email=email).id
            put_on_plan(self.id, plan)
        assert auth.login(email).status_code == 302

    def on_plan(self, plan: str, status: str = "active") -> None:
        with self.app.app_context():
            put_on_plan(self.id, plan, status)

    def strategies(self, n: int) -> list[int]:
        with self.app.app_context():
            return add_strategies(self.id, n)

    def backtests(self, n: int, strategy_id: int | None = None, when: datetime | None = None) -> None:
        with self.app.app_context():
            add_backtests(self.id, strategy_id, n, when)


@pytest.fixture
def member(seeded, client, auth):
    """`member("pro")`: a user on that plan, logged in on `client` (one per test)."""
    return lambda plan="free", email="trader@example.com": Member(seeded, client, auth, email, plan)


def upgrade_page(response) -> dict:
    """What the browser's 403 page says: the feature and the plan it points to."""
    html = response.get_data(as_text=True)
    assert response.status_code == 403, html[:500]
    assert 'data-testid="upgrade-required"' in html
    import re

    feature = re.search(r'data-feature="([^"]*)"', html).group(1)
    plan = re.search(r'data-required-plan="([^"]*)"', html).group(1)
    return {"feature": feature, "required_plan": plan or None, "html": html}


def cached_json(redis_url: str, user_id: int):
    import redis

    raw = redis.Redis.from_url(redis_url).get(f"entitlements:{user_id}")
    return None if raw is None else json.loads(raw)
