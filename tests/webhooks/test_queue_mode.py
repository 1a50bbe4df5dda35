"""WEBHOOK_APPLY=queue: the endpoint records the event `received` and answers `queued`; a worker applies it.

The worker is RQ's SimpleWorker in burst mode on the suite's Redis, in this process (as `flask queue worker --burst`
runs it: jobs in app contexts of the app); tests/queue/test_two_hosts.py runs real `flask queue worker` processes.
"""

from __future__ import annotations

import json
from datetime import timedelta

import redis
import sqlalchemy as sa
from rq import SimpleWorker

from app.extensions import db, task_queue
from app.models import AuditLog, MailOutbox, StripeEvent, User, UserSubscription, utcnow
from app.services.catalog import seed_plans_from_config
from app.tasks import replay_failed_events
from tests.factories import UserFactory
from tests.queue.test_worker import free_port
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import URL, contradicting_event, event, events_in_db, secret
from tests.webhooks.test_stripe_docs_events import CUSTOMER, DOCS_PRICE, load


def queue_mode(app, redis_url: str, queue_url: str | None = None):
    """The app in queue mode, its task queue on the suite's Redis (or `queue_url`), emptied."""
    app.config.update(WEBHOOK_APPLY="queue", TASK_QUEUE_URL=queue_url or redis_url)
    if queue_url is None:
        with app.app_context():
            task_queue().empty()
    return app


def queued_jobs(app) -> list[tuple[str, tuple]]:
    with app.app_context():
        return [(job.func_name, job.args) for job in task_queue().get_jobs()]


def drain(app) -> None:
    """Run every queued job, then stop (`flask queue worker --burst`), the jobs it enqueues (mail) included."""
    with app.app_context():
        queue = task_queue()
        SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")


def failed_jobs(app) -> int:
    with app.app_context():
        return task_queue().failed_job_registry.count


def docs_user(app) -> int:
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        return UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER).id


def plan_of(app, user_id: int) -> tuple[str, str] | None:
    with app.app_context():
        row = db.session.scalar(sa.select(UserSubscription).where(UserSubscription.user_id == user_id))
        return row and (row.status, row.plan.name)


def test_a_queued_event_is_received_until_the_worker_applies_it_then_a_duplicate(app, client, redis_url, smtp_sink):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    response = post_event(client, created, secret(app))
    assert (response.status_code, response.get_json()) == (200, {"status": "queued", "event_id": created["id"]})
    assert events_in_db(app) == {created["id"]: ("received", 0)}
    assert plan_of(app, user_id) is None  # nothing applied in the request
    assert queued_jobs(app) == [("app.tasks.apply_webhook_event", (created["id"], created["type"]))]

    drain(app)
    assert events_in_db(app) == {created["id"]: ("processed", 1)}
    assert plan_of(app, user_id) == ("active", "pro")
    with app.app_context():
        assert list(db.session.scalars(sa.select(AuditLog.action))) == ["subscription.activated"]
        assert list(db.session.scalars(sa.select(MailOutbox.status))) == ["sent"]  # the worker ran its delivery job
        assert db.session.scalar(sa.select(StripeEvent.processed_at)) is not None
    assert smtp_sink.subjects("jennyrosen@example.com") == ["Welcome to Smart Strategies Builder Pro"]
    assert redis.Redis.from_url(redis_url).exists(f"webhook_processed:{created['id']}")
    assert failed_jobs(app) == 0

    again = post_event(client, created, secret(app))
    assert again.get_json() == {"status": "duplicate", "event_id": created["id"]}
    redis.Redis.from_url(redis_url).delete(f"webhook_processed:{created['id']}")
    assert post_event(client, created, secret(app)).get_json()["status"] == "duplicate"  # the table decides
    assert queued_jobs(app) == []
    assert events_in_db(app) == {created["id"]: ("processed", 1)}


def test_a_redelivery_before_the_worker_ran_is_queued_again_and_applied_once(app, client, redis_url, smtp_sink):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    statuses = [post_event(client, created, secret(app)).get_json()["status"] for _ in range(2)]
    assert statuses == ["queued", "queued"]
    assert len(queued_jobs(app)) == 2  # the second job: in case the first was lost
    drain(app)
    assert events_in_db(app) == {created["id"]: ("processed", 1)}  # the second job found nothing to claim
    with app.app_context():
        assert list(db.session.scalars(sa.select(AuditLog.action))) == ["subscription.activated"]
        assert list(db.session.scalars(sa.select(MailOutbox.kind))) == ["subscription_activated"]
    assert smtp_sink.subjects("jennyrosen@example.com") == ["Welcome to Smart Strategies Builder Pro"]
    assert failed_jobs(app) == 0


def test_a_handler_fault_fails_the_job_keeps_the_event_failed_and_the_replay_applies_it(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    body = contradicting_event(seeded)
    response = post_event(client, body, secret(seeded))
    assert (response.status_code, response.get_json()["status"]) == (200, "queued")  # stored: Stripe is done
    drain(seeded)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 1)}
    assert failed_jobs(seeded) == 1
    with seeded.app_context():
        assert "belongs to another user" in db.session.scalar(sa.select(StripeEvent.error))
        assert db.session.scalar(sa.select(UserSubscription.status)) == "active"  # rolled back: nothing partial
        # A redelivery from Stripe now enqueues it again; the fault is still there.
    assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    drain(seeded)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 2)}
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = NULL WHERE email = 'intruder@example.com'"))
        db.session.execute(
            sa.text("UPDATE users SET stripe_customer_id = 'cus_intruder' WHERE email = 'owner@example.com'")
        )
        db.session.commit()
        assert replay_failed_events() == 0  # its backoff (15 min after its receipt, at 2 attempts) has not passed
        db.session.execute(
            sa.update(StripeEvent)
            .values(received_at=utcnow() - timedelta(minutes=16))
            .where(StripeEvent.id == "evt_bad")
        )
        db.session.commit()
        assert replay_failed_events() == 1
    assert events_in_db(seeded) == {"evt_bad": ("processed", 3)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(StripeEvent.error)) is None
        assert db.session.scalar(sa.select(UserSubscription.status)) == "canceled"


def test_a_received_event_whose_job_was_lost_is_applied_by_the_replay_after_a_minute(app, client, redis_url):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        task_queue().empty()  # the job is lost (Redis lost its data, say)
        assert replay_failed_events() == 0  # recorded moments ago: its job may still come
        db.session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(seconds=61)))
        db.session.commit()
        assert replay_failed_events() == 1
    assert events_in_db(app) == {created["id"]: ("processed", 1)}
    assert plan_of(app, user_id) == ("active", "pro")


def test_redis_down_for_the_queue_still_records_and_answers_and_the_replay_applies(app, client, redis_url, caplog):
    queue_mode(app, redis_url, queue_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    response = post_event(client, created, secret(app))
    assert (response.status_code, response.get_json()["status"]) == (200, "queued")
    assert events_in_db(app) == {created["id"]: ("received", 0)}
    assert "stripe_webhook_enqueue_failed" in caplog.text
    with app.app_context():
        db.session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(minutes=2)))
        db.session.commit()
        assert replay_failed_events() == 1
    assert plan_of(app, user_id) == ("active", "pro")


def test_refusals_record_and_enqueue_nothing_in_queue_mode(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    body = json.dumps(event()).encode()
    forged = client.post(URL, data=body, content_type="application/json", headers={"Stripe-Signature": "t=1,v1=00"})
    assert (forged.status_code, forged.get_json()["error"]) == (400, "invalid_signature")
    older = post_event(client, {**event("evt_old"), "api_version": "2024-06-20"}, secret(seeded))
    assert (older.status_code, older.get_json()["error"]) == (422, "api_version_mismatch")
    nul = post_event(
        client, event("evt_nul", obj={"id": "cus_x", "object": "customer", "name": "A\u0000B"}), secret(seeded)
    )
    assert (nul.status_code, nul.get_json()["error"]) == (400, "invalid_payload")
    assert events_in_db(seeded) == {}
    assert queued_jobs(seeded) == []


def test_an_unknown_type_is_queued_then_ignored(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    payout = event(type_="payout.paid", obj={"id": "po_1", "object": "payout"})
    assert post_event(client, payout, secret(seeded)).get_json()["status"] == "queued"
    drain(seeded)
    assert events_in_db(seeded) == {"evt_test_1": ("ignored", 1)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_request_mode_is_unchanged_with_a_queue_configured(seeded, client, redis_url):
    """WEBHOOK_APPLY=request beside a task queue: applied in the request (the mail alone goes to the queue)."""
    seeded.config.update(WEBHOOK_APPLY="request", TASK_QUEUE_URL=redis_url)
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
    assert post_event(client, event(), secret(seeded)).get_json() == {"status": "processed", "event_id": "evt_test_1"}
    assert events_in_db(seeded) == {"evt_test_1": ("processed", 1)}
    assert queued_jobs(seeded) == []
