"""`GET /billing/subscription` states the plan, its status and its features from one reading of the user's
subscription: a webhook applied while the answer is being built, or an entitlements cache entry a webhook's commit
did not drop, never makes the answer contradict itself or the database.

The webhooks are real: the emulator holds them back after Checkout, and the test releases them at the moment named,
right after the request under test has read the user's subscriptions (an engine event on this thread), so that the
live app applies them between two statements of that request, as a webhook arriving then would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import sqlalchemy as sa

from app.extensions import db
from app.models import User
from app.services.catalog import plan_view_by_name
from app.services.entitlements import load_entitlements, plan_entitlements
from tests.entitlements.conftest import put_on_plan

EMAIL = "trader@example.com"


def user_id_of(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(User.id).where(User.email == email))


def features_of(app, plan: str) -> dict:
    """A plan's features as the answer lists them (its entitlements without the `plan` key)."""
    with app.app_context():
        return {k: v for k, v in plan_entitlements(plan_view_by_name(plan)).items() if k != "plan"}


def database_entitlements(app, user_id: int) -> dict:
    """What the database says the user has now, read past every cache."""
    with app.app_context():
        return dict(load_entitlements(user_id))


def paid_with_webhooks_held(api, emulator, token: str) -> None:
    """Checkout for Pro paid in the emulator; its webhooks queued there, not delivered yet."""
    checkout = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert checkout.status_code == 200, checkout.get_json()
    emulator.flush()  # the customer's own events are delivered; only the payment's are held
    emulator.chaos(hold=1)
    emulator.complete_checkout(checkout.get_json()["session_id"])


@contextmanager
def webhooks_applied_after_the_first_subscription_read(app, emulator) -> Iterator[list[str]]:
    """Within the block, the first statement of this thread that reads `user_subscriptions` is followed, before the
    request goes on, by the delivery of every held webhook to the live app (which applies and commits them)."""
    with app.app_context():
        engine = db.engine
    thread = threading.get_ident()
    released: list[str] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        if released or threading.get_ident() != thread or "user_subscriptions" not in statement:
            return
        released.append(statement)
        assert emulator.release() > 0
        emulator.flush()

    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        yield released
    finally:
        sa.event.remove(engine, "after_cursor_execute", after)


def subscription_status(app, user_id: int) -> str | None:
    with app.app_context():
        return db.session.scalar(sa.text("SELECT status FROM user_subscriptions WHERE user_id = :u"), {"u": user_id})


def test_a_webhook_applied_while_the_answer_is_built_does_not_split_it(api, stripe_emulator, webhooks_to_app):
    """The finding: `"plan": "free"` with Pro's features, the plan read before the webhook's commit and the
    features after it."""
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    paid_with_webhooks_held(api, stripe_emulator, token)

    with webhooks_applied_after_the_first_subscription_read(api.app, stripe_emulator) as released:
        during = api.get("/billing/subscription", token).get_json()
    assert released, "the answer read no subscription"
    assert subscription_status(api.app, user_id) == "active"  # the webhooks were applied during that request

    # Read before the commit: all of it Free.
    assert (during["plan"], during["status"]) == ("free", None)
    assert during["features"] == features_of(api.app, "free")

    after = api.get("/billing/subscription", token).get_json()
    assert (after["plan"], after["status"]) == ("pro", "active")
    assert after["features"] == features_of(api.app, "pro")
    assert {"plan": after["plan"], **after["features"]} == database_entitlements(api.app, user_id)


def test_a_stale_entitlements_entry_does_not_contradict_the_plan(api, stripe_emulator, webhooks_to_app, redis_url):
    """A gate read the database before the webhook's commit: its cache fill, after the commit, is refused (the
    invalidation replaced the generation it read: tests/entitlements/test_fill_race.py). An entry can still outlive
    the change when the invalidation could not reach Redis, saying Free until it expires. The gate may answer from
    it (that is the cache's bargain); the answer that states the plan must not pair Pro with Free's features."""
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    paid_with_webhooks_held(api, stripe_emulator, token)

    with webhooks_applied_after_the_first_subscription_read(api.app, stripe_emulator) as released:
        gated = api.get("/strategies", token)  # needs api_access: the gate reads the entitlements
    assert released and gated.status_code == 403
    assert subscription_status(api.app, user_id) == "active"
    store = redis.Redis.from_url(redis_url)
    assert store.get(f"entitlements:{user_id}") is None  # the race left no stale entry
    # The entry a lost invalidation leaves: what the gate read.
    store.set(f"entitlements:{user_id}", json.dumps({"plan": "free", **features_of(api.app, "free")}), ex=3600)
    assert api.get("/strategies", token).status_code == 403

    answer = api.get("/billing/subscription", token).get_json()
    assert (answer["plan"], answer["status"]) == ("pro", "active")
    assert answer["features"] == features_of(api.app, "pro")
    assert {"plan": answer["plan"], **answer["features"]} == database_entitlements(api.app, user_id)


@pytest.mark.parametrize(
    "status, features_plan",
    [
        ("active", "pro"),
        ("trialing", "pro"),
        ("past_due", "pro"),  # Stripe still retries: the plan stays
        ("incomplete", "free"),  # never paid
        ("unpaid", "free"),  # retries given up: "Your Pro features are paused"
        ("paused", "free"),
    ],
)
def test_the_features_are_the_plans_while_its_status_grants_access(api, status, features_plan):
    token = api.user(EMAIL)
    user_id = user_id_of(api.app, EMAIL)
    with api.app.app_context():
        put_on_plan(user_id, "pro", status)
    answer = api.get("/billing/subscription", token).get_json()
    assert (answer["plan"], answer["status"]) == ("pro", status)
    assert answer["features"] == features_of(api.app, features_plan)
    assert answer["features"] == {k: v for k, v in database_entitlements(api.app, user_id).items() if k != "plan"}
