"""What a billing commit tells the rest of the app: one signal, sent after the commit that made it true.

`commit_billing(result)` is the one place a billing transaction ends: it commits, then sends
`subscription_changed` with the `SyncResult`. The modules that keep something derived from the billing state
offer a receiver — the entitlements cache (`entitlements`), the account page's plan outlook (`billing_summary`),
the mail outbox (`mail`) and the counters (`metrics`) — which `create_app` connects, in that order; so the writers
(the sync, the webhook endpoint, checkout, plan changes, the admin) need not know any of them, and this module
imports none of them. A rolled-back transaction sends nothing.

The cache receivers do not go to Redis one by one: each adds its writes to the announcement's `CacheWrites`, sent
in one round trip (a pipeline) once the receivers have run — or earlier, by a receiver whose own work must come
after the caches are dropped. A write may act on its reply: the mail receiver's SET NX of its `mail_delivery_pending`
flag enqueues a delivery job, when it set the flag, once the pipeline (the cache drops with it) has been sent. A
writer adds its own (the webhook endpoint's `webhook_processed` mark) by passing a `CacheWrites` to `commit_billing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from blinker import NamedSignal
from flask import current_app
from ordered_set import OrderedSet

from app.extensions import cache, cache_redis, db


class OrderedSignal(NamedSignal):
    """A blinker signal that calls its receivers in the order they were connected (blinker's own set has none)."""

    set_class = OrderedSet  # type: ignore[assignment]  # blinker types it as type[set]; any mutable set works


#: Sent after every billing commit that concerned a user (`change.user_id` set), changed or not: receivers take
#: `(sender, change)`, the sender being the Flask app, and run in the order `create_app` connects them.
subscription_changed = OrderedSignal("subscription-changed")


@dataclass
class SyncResult:
    """What a sync or a webhook changed: the user, and the audit actions written (empty when nothing changed)."""

    user_id: int | None
    actions: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    #: One of metrics.PLAN_CHANGE_DIRECTIONS per `subscription.plan_changed` action.
    plan_change_directions: list[str] = field(default_factory=list)
    mail_queued: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.actions)


#: What a failed send calls, once per write that asked for it, with the error (Redis down, a timeout).
OnFailure = Callable[[Exception], None]


class CacheWrites:
    """Cache writes that follow one commit, sent together: one round trip to Redis, whatever their number.

    `delete` takes the app cache's keys (Flask-Caching's names, prefixed as it prefixes them); `delete_raw` and
    `set_raw` take Redis keys as they are (the keys the app writes to the Redis client directly, which
    `redis-cli` shows under their own names). Without Redis (SimpleCache, a fresh clone) deletes go to the app
    cache at once and `set_raw` is dropped: it marks a Redis fast path, or (the entitlements generation) is sent only
    with Redis, its receiver invalidating at once without. Writes go in the order added (a set before a delete stays
    before it). `send` never raises: a failed send calls each write's `on_failure` (a cache entry then expires on its
    own; the database stays the truth).
    """

    def __init__(self) -> None:
        self.pending: list[tuple[str, tuple[Any, ...], OnFailure | None]] = []
        #: Writes of another client's making added to the pipeline first (`add_first`), each with its on_failure.
        self.first: list[tuple[Callable[[Any], Any], OnFailure | None]] = []
        #: What to call once the pipeline is sent, per `set_flag` that found its key unset (and set it).
        self.then: dict[int, Callable[[], None]] = {}

    def shares_server(self, client: Any) -> bool:
        """Whether `client` (another redis-py client: the task queue's) talks to the Redis server and database these
        writes go to, so that its writes can join their pipeline (`add_first`)."""
        ours = cache_redis()
        if ours is None or client is None:
            return False
        return server_of(ours) == server_of(client)

    def add_first(self, add: Callable[[Any], Any], on_failure: OnFailure | None = None) -> None:
        """Have `add(pipeline)` put its commands in the pipeline before the others (a library that builds its own
        writes on a given pipeline, such as RQ's enqueue, which may open it as MULTI: only before any command).
        Only for a client that `shares_server` with the cache."""
        self.first.append((add, on_failure))

    def publish(self, channel: str, message: str, on_failure: OnFailure | None = None) -> None:
        """Publish `message` on the Redis channel `channel`, after the writes added before it (nothing without
        Redis: nobody listens)."""
        if cache_redis() is not None:
            self.pending.append(("publish", (channel, message), on_failure))

    def delete(self, *keys: str, on_failure: OnFailure | None = None) -> None:
        """Drop app-cache entries (`cache.delete_many` without its read-back of each key)."""
        if cache_redis() is None:
            self.fallback(lambda: cache.delete_many(*keys), on_failure)
            return
        prefix = getattr(cache.cache, "key_prefix", None) or ""
        prefix = prefix if isinstance(prefix, str) else prefix()
        self.pending.append(("delete", tuple(prefix + key for key in keys), on_failure))

    def delete_raw(self, *keys: str, on_failure: OnFailure | None = None) -> None:
        """Drop Redis keys the app writes directly (falling back to the app cache without Redis)."""
        if cache_redis() is None:
            self.fallback(lambda: cache.delete_many(*keys), on_failure)
            return
        self.pending.append(("delete", keys, on_failure))

    def set_raw(self, key: str, value: str, seconds: int, on_failure: OnFailure | None = None) -> None:
        """Set a Redis key as it is, expiring after `seconds` (nothing without Redis)."""
        if cache_redis() is not None:
            self.pending.append(("set", (key, value, seconds), on_failure))

    def set_flag(self, key: str, seconds: int, then: Callable[[], None], on_failure: OnFailure | None = None) -> bool:
        """`SET key 1 NX EX seconds` with the other writes; once they are sent (the caches dropped), `then()` if the
        key was not set (this write set it: a second round trip of its own). A failed send, or a `then` that raises,
        calls `on_failure`. Returns False without Redis (nothing added: the caller does without)."""
        if cache_redis() is None:
            return False
        self.then[len(self.pending)] = then
        self.pending.append(("flag", (key, seconds), on_failure))
        return True

    @staticmethod
    def fallback(write: Callable[[], Any], on_failure: OnFailure | None) -> None:
        try:
            write()
        except Exception as error:  # noqa: BLE001 - a cache write never fails the commit it follows
            if on_failure is not None:
                on_failure(error)

    def send(self) -> None:
        """Send what is pending in one pipeline (no MULTI: each write stands alone, unless a write added first opened
        one: then all apply together), then forget it. Deletes added one after the other are sent as one DEL of all
        their keys (the same effect; a failed send calls every write's `on_failure` either way)."""
        pending, self.pending = self.pending, []
        first, self.first = self.first, []
        then, self.then = self.then, {}
        client = cache_redis()
        if not (pending or first) or client is None:
            return
        try:
            pipe = client.pipeline(transaction=False)
            try:
                for add, _ in first:
                    add(pipe)
            except Exception as error:  # noqa: BLE001 - a job that cannot be built spoils none of the cache drops
                for _, on_failure in first:
                    if on_failure is not None:
                        on_failure(error)
                first = []
                pipe = client.pipeline(transaction=False)
            deleted: list[str] = []  # deletes in a row go as one DEL: one command to pack, one reply to read
            replies: dict[int, int] = {}  # a flag's write → the place of its reply among the pipeline's
            for number, (command, args, _) in enumerate(pending):
                if command == "delete":
                    deleted.extend(args)
                    continue
                if deleted:
                    pipe.delete(*deleted)
                    deleted = []
                if command == "set":
                    key, value, seconds = args
                    pipe.set(key, value, ex=seconds)
                elif command == "publish":
                    pipe.publish(*args)
                else:
                    key, seconds = args
                    replies[number] = len(pipe.command_stack)
                    pipe.set(key, "1", nx=True, ex=seconds)
            if deleted:
                pipe.delete(*deleted)
            results = pipe.execute()
        except Exception as error:  # noqa: BLE001 - Redis down: each write says so its own way
            for on_failure in [on_failure for _, on_failure in first] + [on_failure for _, _, on_failure in pending]:
                if on_failure is not None:
                    on_failure(error)
            return
        for number, place in replies.items():
            if results[place]:
                CacheWrites.fallback(then[number], pending[number][2])


def server_of(client: Any) -> tuple[Any, ...]:
    """The server and database a redis-py client talks to (its pool's connection settings)."""
    settings = getattr(client.connection_pool, "connection_kwargs", None)
    if settings is None:  # a client of another kind (a cluster's): shares nothing we can tell
        return (id(client),)
    return tuple(settings.get(key) for key in ("host", "port", "path", "db", "username"))


def announce(change: SyncResult, writes: CacheWrites | None = None) -> None:
    """Tell the subscribers about a committed change of the user's billing state (nothing for no user); the
    receivers' cache writes go to Redis together, in one round trip, with any `writes` already added."""
    writes = writes if writes is not None else CacheWrites()
    try:
        if change.user_id is not None:
            app = cast(Any, current_app)._get_current_object()  # the app itself, not the request-bound proxy
            subscription_changed.send(app, change=change, writes=writes)
    finally:  # a later receiver's fault leaves the caches dropped, as they were when each went on its own
        writes.send()


def commit_billing(change: SyncResult, writes: CacheWrites | None = None) -> None:
    """Commit the billing transaction, then announce it: caches, mail and counters follow only what is stored.
    `writes` (cache writes that must follow the commit too) are sent with the receivers' own."""
    db.session.commit()
    announce(change, writes)
