"""A customer cannot spend the account's Stripe rate limit: the pages' reads of Stripe (the billing page's card and
invoices, the account page's scheduled change, read when the cache has none) have the per-user billing limit, the
Portal's return link reads Stripe again only within a per-user budget (RATELIMIT_STRIPE_REFRESH, 4 per minute by
default) and Checkout's success page has that budget too."""

from __future__ import annotations

import socket
import subprocess
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from redis import Redis
from redis.exceptions import RedisError

from app import create_app
from app.extensions import db
from app.models import User, UserSubscription, utcnow
from app.services.billing_summary import forget_plan_outlook
from app.services.catalog import plan_by_name, seed_plans_from_config
from tests.conftest import Auth, make_config
from tests.eventually import eventually


def stripe_calls() -> float:
    return REGISTRY.get_sample_value("stripe_api_request_seconds_count") or 0.0


def calls_for(client, path: str) -> tuple[int, float]:
    before = stripe_calls()
    status = client.get(path).status_code
    return status, stripe_calls() - before


def test_the_portal_return_reads_stripe_only_within_the_users_budget(seeded, client, auth, stripe_emulator):
    auth.signup("customer@example.com")
    customer = stripe_emulator.client().v1.customers.create(params={"email": "customer@example.com"})
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = :id"), {"id": customer.id})
        db.session.commit()
        db.session.remove()
    status, plain = calls_for(client, "/billing")
    assert status == 200
    status, portal = calls_for(client, "/billing?from=portal")  # one refresh of the budget spent
    assert status == 200
    sync = portal - plain
    assert sync >= 1
    before = stripe_calls()
    statuses = [client.get("/billing?from=portal").status_code for _ in range(6)]
    assert statuses == [200] * 6  # the page answers from the local copy once the refreshes are spent
    assert stripe_calls() - before <= 6 * plain + 3 * sync, (stripe_calls() - before, plain, sync)


def with_customer(seeded, stripe_emulator, email: str, subscription_id: str | None = None) -> int:
    """The user's account given a Stripe customer (and, with `subscription_id`, a live Pro subscription row naming
    that id, whether Stripe knows it or not); their id."""
    customer = stripe_emulator.client().v1.customers.create(params={"email": email})
    with seeded.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        user.stripe_customer_id = customer.id
        if subscription_id:
            db.session.add(
                UserSubscription(
                    user_id=user.id,
                    plan_id=plan_by_name("pro").id,
                    billing_cycle="monthly",
                    status="active",
                    stripe_subscription_id=subscription_id,
                    stripe_price_id="price_pro_monthly",
                    current_period_end=utcnow() + timedelta(days=20),
                )
            )
        db.session.commit()
        user_id = user.id
        db.session.remove()
    return user_id


def test_reloading_the_billing_page_is_never_refused_and_reads_stripe_once(seeded, client, auth, stripe_emulator):
    auth.signup("reloader@example.com")
    with_customer(seeded, stripe_emulator, "reloader@example.com")
    seen = [calls_for(client, "/billing") for _ in range(15)]
    assert [status for status, _ in seen] == [200] * 15  # the 11th look at one's own page is no 429
    assert seen[0][1] >= 1 and sum(calls for _, calls in seen[1:]) == 0, seen  # then the cache answers


def test_the_billing_pages_reads_of_stripe_are_limited_per_user(seeded, client, auth, stripe_emulator):
    """Every billing commit drops the page's cache (here: the cache dropped by hand before each view): each view
    then reads Stripe, until the user's RATELIMIT_BILLING (10 per minute) is spent; the page goes on answering,
    from the local copy."""
    auth.signup("reloader@example.com")
    user_id = with_customer(seeded, stripe_emulator, "reloader@example.com")
    seen = []
    for _ in range(13):
        with seeded.app_context():
            forget_plan_outlook(user_id)
        response = client.get("/billing")
        seen.append((response.status_code, "temporarily unavailable" in response.get_data(as_text=True)))
    assert seen == [(200, False)] * 10 + [(200, True)] * 3, seen
    before = stripe_calls()
    with seeded.app_context():
        forget_plan_outlook(user_id)
    assert client.get("/billing").status_code == 200
    assert stripe_calls() == before  # the budget is spent: Stripe is not asked


def test_the_account_pages_reads_of_stripe_have_their_own_budget(seeded, client, auth, stripe_emulator):
    """A subscription Stripe does not know (so the scheduled-change look-up fails and nothing is cached): every
    view of the account page asked Stripe again, without any limit. Now within the user's RATELIMIT_BILLING for
    that look-up, which leaves the billing page's own reads alone."""
    auth.signup("reloader@example.com")
    with_customer(seeded, stripe_emulator, "reloader@example.com", subscription_id="sub_unknown_to_stripe")
    seen = [calls_for(client, "/account") for _ in range(14)]
    assert [status for status, _ in seen] == [200] * 14
    assert all(calls >= 1 for _, calls in seen[:10]), seen
    assert [calls for _, calls in seen[10:]] == [0] * 4, seen
    status, calls = calls_for(client, "/billing")
    assert status == 200 and calls >= 1  # the billing page's card and invoices are still read


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own on a free port, which the test may stop (the suite's Redis is shared)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    assert eventually(lambda: redis_answers(url), 10), "redis-server did not start"
    yield server, url
    server.kill()
    server.wait(10)


def redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.2).ping())
    except RedisError:
        return False


def test_with_redis_down_the_pages_reads_of_stripe_are_counted_in_memory(migrated_database, stripe_emulator, own_redis):
    """Redis goes down after the log-in: the pages' cache is down too, so every view of the billing page reads
    Stripe, and the budget could not be counted there. It is counted in the process's memory meanwhile instead of
    letting every view through."""
    server, redis_url = own_redis
    app = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE=stripe_emulator.url))
    with app.app_context():
        seed_plans_from_config()
    client = app.test_client()
    assert Auth(client).signup("offline@example.com").status_code == 302
    with_customer(app, stripe_emulator, "offline@example.com")
    server.kill()
    server.wait(10)
    seen = [calls_for(client, "/billing") for _ in range(13)]
    assert [status for status, _ in seen] == [200] * 13
    assert all(calls >= 1 for _, calls in seen[:10]), seen
    assert [calls for _, calls in seen[10:]] == [0] * 3, seen


def test_the_checkout_success_page_is_limited_per_user(seeded, client, auth):
    auth.signup("reloader@example.com")
    statuses = [client.get("/billing/success?session_id=cs_test_nothing").status_code for _ in range(7)]
    assert statuses[:4] == [404] * 4 and set(statuses[4:]) == {429}, statuses
