"""Queue mode under faults found in review: a redelivery while a worker applies the event, a worker killed while
applying one, a drain that cannot be enqueued after its flag was set, an event id with no UTF-8 form."""

from __future__ import annotations

import signal
import socket
import threading
from datetime import timedelta

import redis
import sqlalchemy as sa

from app.extensions import db, task_queue
from app.models import StripeEvent, utcnow
from app.services.webhooks import DRAIN_PENDING_KEY, drain_lane
from app.tasks import LEFT_RECEIVED
from tests.queue.test_worker import start_worker
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import event, events_in_db, secret
from tests.webhooks.test_queue_mode import docs_user, drain, queue_mode, queued_jobs
from tests.webhooks.test_stripe_docs_events import DOCS_PRICE, load


def delivered_while_held(app, sql: str, event_id: str, delivery: dict, end: str = "rollback") -> tuple[bool, list]:
    """Post `delivery` in a thread while another connection (a worker's transaction) holds what `sql` locks or writes
    for `event_id`: whether it was answered before that transaction ended (then by `end`), and the answers."""
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    answers: list = []
    with engine.connect() as worker:
        worker.execute(sa.text(sql), {"id": event_id})
        thread = threading.Thread(
            target=lambda: answers.append(post_event(app.test_client(), delivery, secret(app)).get_json())
        )
        thread.start()
        thread.join(timeout=10)
        answered_while_held = not thread.is_alive()
        getattr(worker, end)()
    thread.join()
    engine.dispose()
    return answered_while_held, answers


def test_a_redelivery_does_not_wait_for_the_worker_applying_the_event(app, client, redis_url):
    """The event's row is locked by a worker's transaction (applying it, maybe reading Stripe): the delivery's answer
    decides nothing, so it reads the status as committed instead of waiting for the lock with a web worker."""
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    answered_while_locked, answers = delivered_while_held(  # a worker's claim, holding the row
        app, "SELECT 1 FROM stripe_events WHERE id = :id FOR UPDATE", created["id"], created
    )
    assert answered_while_locked
    assert answers == [{"status": "queued", "event_id": created["id"]}]


def test_an_event_whose_worker_is_killed_while_applying_it_is_failed_not_taken_forever(
    app, client, migrated_database, redis_url, smtp_sink
):
    """A worker dies inside the handler (here: SIGKILL while it waits on Stripe): its claim is rolled back with it.
    The replay marks such an event failed with one more attempt before applying it, so it gets the backoff and the
    cap instead of being taken again, first, by every drain and replay."""
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    failed = load("invoice.payment_failed", user_id)  # its handler reads the subscription from Stripe
    assert post_event(client, failed, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        db.session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(minutes=2)))
        db.session.commit()
    with socket.socket() as silent_stripe:  # accepts, never answers
        silent_stripe.bind(("127.0.0.1", 0))
        silent_stripe.listen()
        silent_stripe.settimeout(60)
        replay = start_worker(
            migrated_database,
            redis_url,
            smtp_sink.port,
            "run",
            "replay_failed_events",
            STRIPE_API_BASE=f"http://127.0.0.1:{silent_stripe.getsockname()[1]}",
            STRIPE_PRICE_PRO_MONTHLY=DOCS_PRICE,
        )
        try:
            connection, _ = silent_stripe.accept()  # the replay is inside the handler, the event claimed
            replay.send_signal(signal.SIGKILL)
            replay.wait(timeout=30)
            connection.close()
        finally:
            if replay.poll() is None:
                replay.kill()
    with app.app_context():
        row = db.session.get(StripeEvent, failed["id"])
        assert (row.status, row.attempts, row.error) == ("failed", 1, LEFT_RECEIVED)
    drain(app)  # drains take `received` events only
    assert events_in_db(app) == {failed["id"]: ("failed", 1)}


def test_a_drain_that_cannot_be_enqueued_leaves_no_flag_holding_its_lane_back(app, client, redis_url, caplog):
    """The flag is set, then RQ's writes fail (here the queue's list is not a list): the flag is deleted again, so
    the lane's next delivery enqueues its drain instead of waiting for the flag to expire."""
    queue_mode(app, redis_url)
    server = redis.Redis.from_url(redis_url)
    with app.app_context():
        queue_key = task_queue().key
    first = event("evt_flag_1", obj={"id": "cus_a", "object": "customer", "email": "a@example.com", "name": "A"})
    flag = DRAIN_PENDING_KEY.format(drain_lane(first["id"]))
    server.delete(flag)
    server.set(queue_key, "not a list")
    try:
        assert post_event(client, first, secret(app)).get_json()["status"] == "queued"
    finally:
        server.delete(queue_key)
    assert "stripe_webhook_enqueue_failed" in caplog.text
    assert not server.exists(flag)
    assert post_event(client, first, secret(app)).get_json()["status"] == "queued"  # a redelivery: the lane's drain
    assert [name for name, _ in queued_jobs(app)] == ["app.tasks.apply_webhook_events"]


def test_an_event_id_without_a_utf8_form_is_refused_with_400_in_both_modes(app, client, redis_url):
    """`"evt_\\ud800"` is valid JSON (a lone surrogate) that the database driver cannot encode: 400, nothing kept."""
    lone = event("evt_\ud800", obj={"id": "cus_a", "object": "customer", "email": "a@example.com", "name": "A"})
    app.config["WEBHOOK_APPLY"] = "request"
    response = post_event(client, lone, secret(app))
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_payload")
    queue_mode(app, redis_url)
    response = post_event(client, lone, secret(app))
    assert (response.status_code, response.get_json()["error"]) == (400, "invalid_payload")
    assert events_in_db(app) == {}


def test_a_delivery_does_not_wait_for_a_worker_applying_an_event_counted_in_the_same_shard(app, client, redis_url):
    """A worker's claim moves its event from `received` to `processed`; the per-status counts of that shard change
    at its commit (migration 0014), not at the claim, so a new event of the same shard (ids ending in the same
    character) is recorded while the worker's transaction — its handler — is still running."""
    queue_mode(app, redis_url)
    customer = {"id": "cus_a", "object": "customer", "email": "a@example.com", "name": "A"}
    first, second = event("evt_shard_first_x", obj=customer), event("evt_shard_second_x", obj=customer)
    assert post_event(client, first, secret(app)).get_json()["status"] == "queued"
    answered_while_applying, answers = delivered_while_held(  # a worker's claim, open while its handler runs
        app, "UPDATE stripe_events SET status = 'processed' WHERE id = :id", first["id"], second, end="commit"
    )
    assert answered_while_applying
    assert answers == [{"status": "queued", "event_id": second["id"]}]
    with app.app_context():
        counts = dict(
            db.session.execute(
                sa.text("SELECT status, sum(events) FROM stripe_event_counts GROUP BY status HAVING sum(events) <> 0")
            ).all()
        )
    assert counts == {"processed": 1, "received": 1}
