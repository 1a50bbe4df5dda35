"""The fault suite, on the real parts: Redis stopped, PostgreSQL down and restarted during a burst,
a gunicorn worker SIGKILLed in the middle of a webhook, Stripe (the emulator) unreachable.

Every test leaves PostgreSQL and Redis running (the `services` fixture starts them again whatever happened) and
stops whatever it started (gunicorn, emulators).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time

import psycopg
import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import AuditLog, StripeEvent, User, UserSubscription
from app.services.checkout import start_checkout
from stripe_emulator.testing import EmulatorServer
from tests.conftest import Auth, empty_database, make_config
from tests.reliability.conftest import PASSWORD_HASH, http, wait_until
from tests.webhooks.signing import sign

SUCCESS_URL = "http://127.0.0.1/s?session_id={CHECKOUT_SESSION_ID}"


def make_users(app, count: int, prefix: str = "fault") -> list[int]:
    with app.app_context():
        users = [User(email=f"{prefix}{i}@example.com", password_hash=PASSWORD_HASH) for i in range(count)]
        db.session.add_all(users)
        db.session.commit()
        ids = [u.id for u in users]
        db.session.remove()
        return ids


def open_checkouts(app, user_ids: list[int], plan: str = "pro") -> list[str]:
    """A Checkout Session per user, through the app's service (customers are created and linked first)."""
    with app.app_context():
        sessions = [
            start_checkout(uid, plan, "monthly", SUCCESS_URL, "http://127.0.0.1/pricing").session_id for uid in user_ids
        ]
        db.session.remove()
        return sessions


def final_attempts(emulator) -> dict:
    """The last attempt of each (event, copy) delivery."""
    final = {}
    for attempt in emulator.deliveries():
        final[(attempt["event_id"], attempt["duplicate"])] = attempt
    return final


def recorded(app) -> dict[str, tuple[str, int]]:
    with app.app_context():
        rows = {e.id: (e.status, e.attempts) for e in db.session.scalars(sa.select(StripeEvent))}
        db.session.remove()
        return rows


def audit_counts(app) -> collections.Counter:
    with app.app_context():
        rows = db.session.execute(sa.select(AuditLog.user_id, AuditLog.action, AuditLog.details)).all()
        db.session.remove()
    return collections.Counter((u, a, json.dumps(d, sort_keys=True)) for u, a, d in rows)


def subscription_statuses(app) -> dict[int, str]:
    with app.app_context():
        rows = dict(db.session.execute(sa.select(UserSubscription.user_id, UserSubscription.status)).all())
        db.session.remove()
        return rows


# --- Redis stopped ------------------------------------------------------------------------------------------------


def test_redis_stopped_exactly_once_through_the_database_and_caches_refill(
    seeded, webhooks_to_app, stripe_emulator, services, client
):
    app, emulator = seeded, stripe_emulator
    user_ids = make_users(app, 6)
    sessions = open_checkouts(app, user_ids)
    auth = Auth(client)
    with app.app_context():
        db.session.execute(sa.text("UPDATE users SET email = 'trader@example.com' WHERE id = :id"), {"id": user_ids[0]})
        db.session.commit()
        db.session.remove()
    auth.login()  # logged in while Redis is up; the session is a signed cookie, not in Redis

    services.stop_redis()
    emulator.chaos(duplicate=1, shuffle=1, concurrency=4)
    for session_id in sessions:
        emulator.complete_checkout(session_id)
    emulator.flush(timeout=60)

    # Every delivery answered 2xx at last, each event applied once: the database's row decided duplicates.
    final = final_attempts(emulator)
    assert final and all(a["ok"] for a in final.values())
    events = {event_id for event_id, _ in final}
    assert set(recorded(app)) == events
    assert {status for status, _ in recorded(app).values()} <= {"processed", "ignored"}
    assert all(attempts == 1 for _, attempts in recorded(app).values())
    assert [k for k, n in audit_counts(app).items() if n > 1] == []
    assert set(subscription_statuses(app).values()) == {"active"} and len(subscription_statuses(app)) == 6

    # Pages keep working without Redis: entitlements from the database, the rate limiter fails open (README).
    for path in ("/pricing", "/account", "/billing", "/strategies/"):
        assert client.get(path).status_code == 200, path
    assert "Pro" in client.get("/account").get_data(as_text=True)

    # Redis back: the next requests and deliveries fill the caches again.
    services.start_redis()
    redis_client = services.redis()
    assert redis_client.dbsize() == 0
    # (the entitlements cache retries Redis CACHE_RETRY_SECONDS after a failure, so refilling may take that long)
    wait_until(
        lambda: client.get("/strategies/").status_code == 200 and redis_client.exists(f"entitlements:{user_ids[0]}"),
        12,
        0.5,
        message="entitlements cache refill",
    )
    some_event = next(iter(events))
    attempt = next(a for a in emulator.deliveries() if a["event_id"] == some_event)
    body = emulator.emulator.store.get("events", some_event)
    payload = json.dumps(body, indent=2).encode()
    status, answer, _ = http(
        "POST",
        webhooks_to_app.webhook_url,
        payload,
        {"Content-Type": "application/json", "Stripe-Signature": sign(payload, app.config["STRIPE_WEBHOOK_SECRET"])},
    )
    assert status == 200 and json.loads(answer)["status"] == "duplicate", attempt
    assert redis_client.exists(f"webhook_processed:{some_event}")


# --- PostgreSQL down, restarted during a burst ---------------------------------------------------------------------


@pytest.fixture
def patient_emulator(stripe_emulator):
    """The session's emulator with a retry schedule long enough to outlast a PostgreSQL restart."""
    dispatcher = stripe_emulator.emulator.dispatcher
    saved = dispatcher.retry_schedule, dispatcher.max_attempts
    dispatcher.retry_schedule, dispatcher.max_attempts = [0.5, 1.0, 2.0, 3.0, 4.0, 5.0], 10
    yield stripe_emulator
    dispatcher.retry_schedule, dispatcher.max_attempts = saved


def test_postgres_restarted_during_a_burst_5xx_then_retries_bring_everything_in(
    seeded, webhooks_to_app, patient_emulator, services
):
    app, emulator = seeded, patient_emulator
    user_ids = make_users(app, 12)
    sessions = open_checkouts(app, user_ids)
    emulator.chaos(duplicate=1, shuffle=1, concurrency=8)
    for session_id in sessions[:4]:
        emulator.complete_checkout(session_id)
    emulator.chaos(hold=1)  # the rest of the burst is queued while PostgreSQL goes away
    for session_id in sessions[4:]:
        emulator.complete_checkout(session_id)
    services.stop_postgres()
    stopped_at = time.time()
    try:
        emulator.release()
        wait_until(
            lambda: any(not a["ok"] and a["sent_at"] >= stopped_at for a in emulator.deliveries()),
            20,
            message="a delivery refused while PostgreSQL is down",
        )
        time.sleep(1.0)
    finally:
        services.start_postgres()
    restarted_at = time.time()
    emulator.flush(timeout=90)

    attempts = emulator.deliveries()
    while_down = [a for a in attempts if stopped_at <= a["sent_at"] < restarted_at - 0.5]
    refused = [a for a in while_down if not a["ok"]]
    assert refused and all(a["status_code"] is None or a["status_code"] >= 500 for a in refused), refused[:3]
    # The only 2xx while PostgreSQL is down: copies of events that reached the app before, answered from Redis's
    # fast path (one whose first copy was in flight as PostgreSQL stopped may have committed without its answer
    # getting back: its later copy is then answered from the mark, rightly).
    reached_before = {a["event_id"] for a in attempts if a["sent_at"] < stopped_at}
    assert {a["event_id"] for a in while_down if a["ok"]} <= reached_before
    after = [a for a in attempts if a["sent_at"] >= restarted_at + 0.5]
    assert after and all(a["ok"] for a in after), [a for a in after if not a["ok"]][:3]  # no 500 loop: pool reconnects

    final = final_attempts(emulator)
    assert all(a["ok"] for a in final.values())
    sent = {event_id for event_id, _ in final}
    rows = recorded(app)
    assert set(rows) == sent and len(rows) == len(sent)  # the count of events equals the count sent
    assert {status for status, _ in rows.values()} <= {"processed", "ignored"}  # ignored: types with no handler
    assert [k for k, n in audit_counts(app).items() if n > 1] == []
    assert subscription_statuses(app) == {uid: "active" for uid in user_ids}


# --- A gunicorn worker SIGKILLed in the middle of a webhook --------------------------------------------------------


def test_worker_killed_mid_webhook_the_retry_processes_it_nothing_partial(
    seeded, stripe_emulator, gunicorn, database_url
):
    app, emulator = seeded, stripe_emulator
    [user_id] = make_users(app, 1, "killed")
    [session_id] = open_checkouts(app, [user_id])
    emulator.complete_checkout(session_id)
    server = gunicorn(workers=1).start()
    with app.app_context():
        customer = db.session.get(User, user_id).stripe_customer_id
        db.session.remove()
    stripe = emulator.client()
    sub = stripe.v1.subscriptions.list(params={"customer": customer}).data[0]
    with app.app_context():  # the subscription is known (as the success page would have synced it)
        from app.services.sync import sync_customer

        sync_customer(customer)
        db.session.remove()
    emulator.add_webhook(server.webhook_url(app.config["API_PREFIX"]), app.config["STRIPE_WEBHOOK_SECRET"])

    # Hold the user's row lock from outside: the handler blocks on it, mid-transaction, its event row inserted.
    blocker = psycopg.connect(database_url, autocommit=False)
    watcher = psycopg.connect(database_url, autocommit=True)  # a fresh pg_stat_activity view per statement
    try:
        blocker.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        stripe.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
        # Blocked by the blocker's lock (the user's row), whatever the text of the waiting statement.
        waiting = wait_until(
            lambda: watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (blocker.info.backend_pid,)
            ).fetchall(),
            15,
            message="the webhook handler to block on the user's lock",
        )
        [worker] = server.workers()
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: server.workers() and server.workers() != [worker], 15, message="a new worker")
        # The killed request's transaction is rolled back by PostgreSQL once its backend goes: nothing partial.
        watcher.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
    finally:
        blocker.rollback()
        blocker.close()
        watcher.close()
    emulator.flush(timeout=60)

    attempts = [a for a in emulator.deliveries() if a["url"].startswith(server.url)]
    assert not attempts[0]["ok"] and attempts[0]["error"], attempts[0]  # the connection died with the worker
    assert attempts[-1]["ok"] and attempts[-1]["attempt"] >= 2
    rows = recorded(app)
    assert len(rows) == len({a["event_id"] for a in attempts}) and {s for s, _ in rows.values()} == {"processed"}
    actions = [a for (_, a, _), n in audit_counts(app).items() for _ in range(n)]
    assert actions.count("subscription.cancel_scheduled") == 1
    with app.app_context():
        assert db.session.scalar(sa.select(UserSubscription.cancel_at_period_end)) is True
        db.session.remove()
    emulator.clear_webhooks()


# --- Stripe unreachable --------------------------------------------------------------------------------------------


def test_stripe_down_checkout_and_portal_say_temporarily_unavailable_and_write_nothing(
    migrated_database, redis_url, smtp_sink
):
    from app.services.catalog import seed_plans_from_config

    own = EmulatorServer().start()
    app = create_app(
        make_config(
            migrated_database,
            redis_url,
            STRIPE_API_BASE=own.url,
            STRIPE_MAX_NETWORK_RETRIES=0,
            RATELIMIT_BILLING="100 per minute",
        )
    )
    try:
        with app.app_context():
            seed_plans_from_config()
        client = app.test_client()
        Auth(client).signup("free@example.com")
        paying_client = app.test_client()
        Auth(paying_client).signup("paying@example.com")
        with app.app_context():
            paying = db.session.scalar(sa.select(User).where(User.email == "paying@example.com"))
            session_id = start_checkout(paying.id, "pro", "monthly", SUCCESS_URL, "http://127.0.0.1/pricing").session_id
            own.complete_checkout(session_id)
            from app.services.sync import sync_customer

            sync_customer(paying.stripe_customer_id)
            customer = paying.stripe_customer_id
            sub_row = db.session.scalar(sa.select(UserSubscription))
            sub_id, period_end = sub_row.stripe_subscription_id, sub_row.current_period_end
            db.session.remove()
        sub = own.client().v1.subscriptions.retrieve(sub_id).to_dict()
        own.stop()  # Stripe is gone
        before = audit_counts(app), subscription_statuses(app)

        from tests.conftest import csrf_token_from

        token = csrf_token_from(client.get("/pricing").get_data(as_text=True))
        response = client.post(
            "/billing/checkout", data={"plan": "pro", "cycle": "monthly", "csrf_token": token}, follow_redirects=True
        )
        assert "temporarily unavailable" in response.get_data(as_text=True)
        token = csrf_token_from(paying_client.get("/billing").get_data(as_text=True))
        response = paying_client.post("/billing/portal", data={"csrf_token": token}, follow_redirects=True)
        assert "temporarily unavailable" in response.get_data(as_text=True)

        api = app.test_client()
        tokens = api.post(
            app.config["API_PREFIX"] + "/auth/token", json={"email": "free@example.com", "password": "correct horse"}
        ).get_json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        response = api.post(
            app.config["API_PREFIX"] + "/billing/checkout",
            headers=headers,
            json={"plan_name": "pro", "billing_cycle": "monthly"},
        )
        assert response.status_code == 503 and response.get_json()["error"] == "billing_unavailable"
        assert "temporarily unavailable" in response.get_json()["message"]

        with app.app_context():  # nothing written: no customer for the free user, no audit, no subscription change
            assert db.session.scalar(sa.select(User.stripe_customer_id).where(User.email == "free@example.com")) is None
            db.session.remove()
        assert (audit_counts(app), subscription_statuses(app)) == before

        # Webhooks do not need Stripe when the event carries a newer state: applied as usual.
        sub["cancel_at_period_end"] = True
        event = {
            "id": "evt_while_stripe_down",
            "object": "event",
            "type": "customer.subscription.updated",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()) + 3600,
            "livemode": False,
            "data": {"object": sub},
        }
        payload = json.dumps(event, default=str).encode()
        response = client.post(
            app.config["API_PREFIX"] + "/billing/webhooks/stripe",
            data=payload,
            content_type="application/json",
            headers={"Stripe-Signature": sign(payload, app.config["STRIPE_WEBHOOK_SECRET"])},
        )
        assert response.status_code == 200 and response.get_json()["status"] == "processed"
        with app.app_context():
            row = db.session.scalar(sa.select(UserSubscription))
            assert row.cancel_at_period_end is True and row.current_period_end == period_end
            db.session.remove()
        assert customer
    finally:
        own.stop() if own._thread is not None else None
        empty_database(app)
