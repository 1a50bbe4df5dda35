"""What a webhook leaves in Redis after its commit (sent together, in one round trip): the `webhook_processed`
mark, and the user's cached entitlements, plan outlook and billing summary dropped — and, with Redis down, a
delivery that still succeeds, each cache saying in the log that it could not be reached."""

import logging
import socket

import redis
import sqlalchemy as sa

from app import create_app
from app.extensions import db, task_queue
from app.models import User
from app.services.signals import CacheWrites
from tests.conftest import make_config
from tests.factories import UserFactory
from tests.perf.test_webhook_queue_round_trips import pipelined_commands
from tests.perf.test_webhook_round_trips import docs_customer  # noqa: F401  (the fixture)
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import event, events_in_db, secret
from tests.webhooks.test_stripe_docs_events import CUSTOMER, load


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_the_commit_marks_the_event_and_drops_the_users_caches(seeded, client, redis_url):
    with seeded.app_context():
        user_id = UserFactory(email="old@example.com", stripe_customer_id="cus_test").id
        other_id = UserFactory(email="other@example.com").id
    store = redis.Redis.from_url(redis_url)
    cached = [f"entitlements:{user_id}", f"plan_outlook:{user_id}", f"billing_summary:{user_id}"]
    for key in [*cached, f"entitlements:{other_id}"]:
        store.set(key, "x")
    assert post_event(client, event(), secret(seeded)).status_code == 200
    assert store.ttl("webhook_processed:evt_test_1") > 6 * 24 * 3600
    assert [key for key in cached if store.exists(key)] == []
    assert store.exists(f"entitlements:{other_id}")  # another user's entry stays


def test_with_redis_down_the_delivery_succeeds_and_each_cache_logs_its_failure(migrated_database, caplog):
    app = create_app(make_config(migrated_database, f"redis://127.0.0.1:{closed_port()}/0"))
    try:
        with app.app_context():
            UserFactory(email="old@example.com", stripe_customer_id="cus_test")
        with caplog.at_level(logging.WARNING):
            response = post_event(app.test_client(), event(), secret(app))
        assert response.status_code == 200 and response.get_json()["status"] == "processed"
        assert events_in_db(app) == {"evt_test_1": ("processed", 1)}
        messages = [record.getMessage() for record in caplog.records]
        for failure in (
            "webhook_redis_unavailable",
            "entitlements_cache_invalidate_failed",
            "plan_outlook_cache_unavailable",
        ):
            assert sum(failure in message for message in messages) == 1, (failure, messages)
    finally:
        with app.app_context():
            db.session.execute(sa.text("TRUNCATE users, stripe_events, audit_logs RESTART IDENTITY CASCADE"))
            db.session.commit()
            db.engine.dispose()


def test_a_mails_delivery_job_goes_to_the_queue_with_the_cache_writes(docs_customer, client, redis_url):  # noqa: F811
    """On the cache's Redis, the commit's one pipeline sets the `mail_delivery_pending` flag with the cache drops,
    and the delivery job follows (the flag was not set): the job is there, runnable by a worker, and the caches are
    dropped."""
    docs_customer.config["TASK_QUEUE_URL"] = redis_url
    with docs_customer.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.stripe_customer_id == CUSTOMER))
        queue = task_queue()
        assert queue is not None
        queue.empty()
    store = redis.Redis.from_url(redis_url)
    store.set(f"entitlements:{user_id}", "x")
    assert post_event(client, load("customer.subscription.created", user_id), secret(docs_customer)).status_code == 200
    jobs = queue.get_jobs()
    assert [(job.func_name, job.get_status(), job.timeout, job.retries_left) for job in jobs] == [
        ("app.tasks.deliver_mail", "queued", 120, 6)
    ]
    assert not store.exists(f"entitlements:{user_id}")


def test_a_job_that_cannot_be_added_spoils_none_of_the_cache_drops(app, redis_url):
    """A write of another client's making (`add_first`: RQ's enqueue) that raises while it is built says so through
    its own on_failure; the commit's cache drops still go out."""
    store = redis.Redis.from_url(redis_url)
    store.set("entitlements-probe", "x")
    failures: list[str] = []

    def broken(pipeline) -> None:
        raise RuntimeError("no job today")

    with app.app_context():
        writes = CacheWrites()
        writes.add_first(broken, on_failure=lambda error: failures.append(str(error)))
        writes.delete_raw("entitlements-probe")
        writes.send()
    assert failures == ["no job today"]
    assert not store.exists("entitlements-probe")


def test_deletes_in_a_row_are_sent_as_one_del_and_a_write_between_keeps_its_place(seeded, redis_url, monkeypatch):
    """A commit's cache drops (each receiver adds its own) go as one DEL of all their keys: the same effect, one
    command to pack and one reply to read; a write between them stays between them."""
    store = redis.Redis.from_url(redis_url)
    store.mset({"cached_a": "x", "cached_c": "x"})
    with seeded.app_context():
        writes = CacheWrites()
        writes.delete_raw("cached_a")
        writes.set_raw("cached_b", "1", 60)
        writes.delete_raw("cached_b")
        writes.delete_raw("cached_c")
        with pipelined_commands(monkeypatch) as sent:
            writes.send()
    assert sent == [[("DEL", "cached_a"), ("SET", "cached_b", "1", "EX", "60"), ("DEL", "cached_b", "cached_c")]]
    assert store.exists("cached_a", "cached_b", "cached_c") == 0
