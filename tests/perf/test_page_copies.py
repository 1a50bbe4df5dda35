"""The page cache's entries copied per process (`extensions.PageCacheCopies`): a logged-in view read again makes no
round trip to Redis, and a drop announced by any process (a webhook's commit in a queue worker, the Portal's return)
reaches every copy before it is served again."""

from __future__ import annotations

import time

import pytest
from redis import Redis

import app.extensions as extensions
from app.extensions import KeptConnectionReads, cache, page_cache, page_cache_drops
from app.services.billing_summary import forget_plan_outlook
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401  (the fixture)


def wait_until_listening(reads) -> None:
    """The subscription confirmed by Redis (a read or two after the first)."""
    deadline = time.monotonic() + 5
    while not reads.listening():
        assert time.monotonic() < deadline, "Redis never confirmed the subscription"
        time.sleep(0.01)


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_read_again_makes_no_round_trip_to_redis(app, pro_client, path):  # noqa: F811
    """(Before: one GET of the page's Stripe summary or outlook per view.)"""
    pro_client.get(path)
    with app.test_request_context():
        wait_until_listening(page_cache())
    pro_client.get(path)  # copied now
    assert calls_of(KeptConnectionReads.get, lambda: pro_client.get(path)) == 0
    assert calls_of(Redis.execute_command, lambda: pro_client.get(path)) == 0


def test_a_drop_published_by_another_client_reaches_the_copy(app, redis_url):
    with app.test_request_context():
        reads = page_cache()
        cache.set("copied-entry", "first", timeout=60)
        wait_until_listening(reads)
        assert reads.get("copied-entry") == "first"
        cache.set("copied-entry", "second", timeout=60)  # changed behind the copy: still the copy
        assert reads.get("copied-entry") == "first"
        other = Redis.from_url(redis_url)  # another process's client
        other.publish(page_cache_drops(), "something-else copied-entry")
        deadline = time.monotonic() + 5
        while reads.get("copied-entry") != "second":
            assert time.monotonic() < deadline, "the drop never reached the copy"
            time.sleep(0.01)


def test_a_billing_commits_drop_reaches_the_copies(app, pro_client):  # noqa: F811
    """`forget_plan_outlook` (and every billing commit's receiver) deletes the entries and announces it."""
    pro_client.get("/billing")
    with app.test_request_context():
        reads = page_cache()
        wait_until_listening(reads)
        key = next(key for key in reads.copies if key.startswith("billing_summary:")) if reads.copies else None
        if key is None:
            pro_client.get("/billing")
            key = next(key for key in reads.copies if key.startswith("billing_summary:"))
        user_id = int(key.split(":")[1])
        forget_plan_outlook(user_id)
        deadline = time.monotonic() + 5
        while True:
            reads.listening()
            if key not in reads.copies:
                break
            assert time.monotonic() < deadline, "the commit's drop never reached the copy"
            time.sleep(0.01)


def test_nothing_is_copied_before_redis_confirms_the_subscription(app):
    with app.test_request_context():
        reads = page_cache()
        reads.forget()
        cache.set("unconfirmed-entry", "value", timeout=60)
        reads.subscribed = False
        reads.pubsub = None
        # The first read subscribes; its answer comes from Redis and is not copied unless the confirmation was in.
        reads.get("unconfirmed-entry")
        if not reads.subscribed:
            assert "unconfirmed-entry" not in reads.copies


def test_a_lost_listening_connection_forgets_every_copy_and_reads_through(app):
    with app.test_request_context():
        reads = page_cache()
        cache.set("lost-entry", "value", timeout=60)
        wait_until_listening(reads)
        reads.get("lost-entry")
        assert "lost-entry" in reads.copies
        reads.pubsub.connection.disconnect()  # the listening connection lost (Redis restarted, the network)
        reads.pubsub.connection = None
        cache.set("lost-entry", "changed", timeout=60)
        assert reads.get("lost-entry") == "changed"  # read through, the copies forgotten
        assert "lost-entry" not in reads.copies or reads.copies["lost-entry"][0] == "changed"
        wait_until_listening(reads)  # subscribed again
        assert reads.get("lost-entry") == "changed"


def test_a_copy_is_read_again_once_it_is_old(app, monkeypatch):
    monkeypatch.setattr(extensions, "PAGE_COPY_SECONDS", 0.0)
    with app.test_request_context():
        reads = page_cache()
        cache.set("aged-entry", "first", timeout=60)
        wait_until_listening(reads)
        assert reads.get("aged-entry") == "first"
        cache.set("aged-entry", "second", timeout=60)
        assert reads.get("aged-entry") == "second"
