"""The pages' cache reads (the billing page's Stripe summary, the account page's outlook) through a connection the
process keeps for them (`extensions.page_cache`): no connection taken from Redis's pool per view, the entries the
pool's writes left, a connection of the process's own after a fork, and one Redis dropped connected again."""

from __future__ import annotations

import inspect
import os
import time

import pytest
from redis import Redis
from redis.connection import ConnectionPool
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.extensions import cache, page_cache, page_cache_drops
from app.services.signals import CacheWrites
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_takes_no_connection_from_the_cache_pool(pro_client, path):  # noqa: F811
    """(Before: one taken and given back per view, for the Stripe summary or the outlook.)"""
    taken = inspect.unwrap(ConnectionPool.get_connection)  # redis-py wraps it (deprecated arguments)
    assert taken.__code__ is not ConnectionPool.get_connection.__code__
    assert calls_of(taken, lambda: pro_client.get(path)) == 0


def test_the_page_cache_reads_what_the_cache_wrote(app):
    with app.app_context():
        cache.set("page-cache-test", {"card": ("visa", "4242")}, timeout=60)
        assert page_cache().get("page-cache-test") == {"card": ("visa", "4242")}
        assert page_cache() is page_cache()  # the same connection, read after read
        writes = CacheWrites()  # as a commit drops an entry: deleted, and the drop announced to every copy
        writes.delete("page-cache-test")
        writes.publish(page_cache_drops(), "page-cache-test")
        writes.send()
        deadline = time.monotonic() + 5
        while page_cache().get("page-cache-test") is not None:
            assert time.monotonic() < deadline, "the drop never reached the process's copy"
            time.sleep(0.01)
        assert page_cache().get("never-written") is None


def test_a_forked_process_reads_on_a_connection_of_its_own(app):
    with app.app_context():
        cache.set("page-cache-fork", "before the fork", timeout=60)
        parent = page_cache()
        assert parent.get("page-cache-fork") == "before the fork"
        child = os.fork()
        if child == 0:  # the child: its own client and connection, the parent's left alone
            try:
                with app.app_context():
                    reads = page_cache()
                    fresh = (
                        reads is not parent
                        and reads.reads._read_client.connection is not parent.reads._read_client.connection
                    )
                    os._exit(0 if fresh and reads.get("page-cache-fork") == "before the fork" else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert page_cache() is parent and parent.get("page-cache-fork") == "before the fork"
        cache.delete("page-cache-fork")


def test_a_connection_redis_dropped_is_connected_again(app, pro_client):  # noqa: F811
    """Redis ends the kept connection (a restart, an idle time-out): the next read connects again, and the pages
    show what they showed."""
    before = {path: pro_client.get(path).get_data(as_text=True) for path in CEILINGS}
    with app.app_context():
        kept = page_cache().reads._read_client
        writer = cache.cache._write_client
        [ours] = [c for c in writer.client_list() if int(c["id"]) == kept.client_id()]
        writer.client_kill_filter(_id=ours["id"])
    for path in CEILINGS:
        response = pro_client.get(path)
        assert response.status_code == 200
        assert response.get_data(as_text=True) == before[path]


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_views_cache_read_goes_straight_to_its_connection(pro_client, path):  # noqa: F811
    """The page's one GET is sent on the kept connection without redis-py's command dispatch (its retry closure,
    its metrics, its reconnect check): about 40 µs of CPU less per view. (Before: one dispatch per view.)"""
    assert calls_of(Redis._execute_command, lambda: pro_client.get(path)) == 0


def test_a_cache_read_that_fails_on_the_kept_connection_leaves_it_closed_and_the_next_read_connects(app):
    """A GET whose reply does not come (here a time-out: Redis was slow) fails as redis-py's own GET fails (the
    billing page then asks Stripe), leaves nothing unread on the connection, and the next GET answers."""
    with app.app_context():
        cache.set("page-cache-retry", "kept", timeout=60)
        reads = page_cache()
        connection = reads.reads._read_client.connection

        def slow(*args, **kwargs):
            raise RedisTimeoutError("Timeout reading from the test's Redis")

        connection.read_response = slow
        try:
            with pytest.raises(RedisTimeoutError):
                reads.get("page-cache-retry")
        finally:
            del connection.read_response
        assert connection._sock is None  # closed: the late reply cannot be read as the next GET's
        assert reads.get("page-cache-retry") == "kept"
        cache.delete("page-cache-retry")


def test_a_cache_read_on_a_connection_that_retries_goes_through_redis_py(app):
    """A retry policy that retries (not the cache's, as configured) is redis-py's to apply: such a GET takes
    redis-py's dispatch."""
    with app.app_context():
        cache.set("page-cache-retries", "kept", timeout=60)
        connection = page_cache().reads._read_client.connection
        assert connection.retry.get_retries() == 0  # the cache's policy: a failed read goes to Stripe instead
        connection.retry.update_retries(2)
        try:
            assert calls_of(Redis._execute_command, lambda: page_cache().get("page-cache-retries")) == 1
            assert page_cache().get("page-cache-retries") == "kept"
        finally:
            connection.retry.update_retries(0)
            cache.delete("page-cache-retries")
