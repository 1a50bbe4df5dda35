"""Asynchronous, signed webhook delivery with retries and optional chaos.

Stripe delivers events from its own infrastructure: late, sometimes twice,
without ordering guarantees, and retries non-2xx answers with back-off. The
app's handlers must survive all of that, so this dispatcher reproduces it on a
compressed schedule (seconds instead of days) and records every attempt so
tests can assert on what was delivered.

Signatures use real wall-clock time (not the emulator clock): the receiver's
``construct_event`` compares the timestamp with *its* clock, and the emulator
clock may have been advanced by weeks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value for ``payload``, exactly as Stripe builds it."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    mac = hmac.new(secret.encode("utf-8"), f"{ts}.{payload}".encode(), hashlib.sha256)
    return f"t={ts},v1={mac.hexdigest()}"


@dataclass
class Job:
    seq: int
    event_id: str
    event_type: str
    url: str
    secret: str
    body: str
    endpoint_id: str | None
    due: float
    attempt: int = 0
    held: bool = False
    duplicate: bool = False


@dataclass
class Chaos:
    """Fault injection knobs, set through ``POST /_emulator/chaos``."""

    duplicate: bool = False  # deliver every event twice
    shuffle: bool = False  # pick the next ready delivery at random
    delay_ms: int = 0  # wait this long before the first attempt
    hold: bool = False  # queue deliveries until released
    fail_first: int = 0  # answer nothing: treat the first N attempts per event as failed (network error)
    concurrency: int = 1  # deliveries in flight at once (Stripe sends from many machines)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Dispatcher:
    """Background delivery queue. By default one delivery is in flight at a time, which keeps delivery
    order deterministic (events go out in creation order unless ``shuffle`` is on); ``concurrency=N``
    lets up to N worker threads deliver at once, like Stripe's many senders."""

    MAX_CONCURRENCY = 32

    retry_schedule: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    max_attempts: int = 5
    timeout: float = 10.0
    on_attempt: Callable[[dict], None] | None = None

    def __post_init__(self) -> None:
        self.chaos = Chaos()
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._inflight = 0
        self._seq = 0
        self.attempts: list[dict] = []
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._ensure_workers(1)

    def _ensure_workers(self, count: int) -> None:
        """Start worker threads until there are ``count`` (they idle when concurrency is lower)."""
        while len(self._threads) < min(count, self.MAX_CONCURRENCY):
            thread = threading.Thread(
                target=self._run, name=f"stripe-emulator-webhooks-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def set_concurrency(self, count: int) -> None:
        """Deliver up to ``count`` events at once (1 restores serial delivery)."""
        with self._cond:
            self.chaos.concurrency = max(1, min(int(count), self.MAX_CONCURRENCY))
            self._ensure_workers(self.chaos.concurrency)
            self._cond.notify_all()

    # ------------------------------------------------------------ producer
    def enqueue(self, event: dict, targets: list[tuple[str | None, str, str, str]]) -> None:
        """Queue ``event`` for each (endpoint id, url, secret, API version) target; each endpoint's copy
        carries the endpoint's ``api_version``, as Stripe stamps it."""
        bodies: dict[str, str] = {}
        with self._cond:
            copies = 2 if self.chaos.duplicate else 1
            for endpoint_id, url, secret, version in targets:
                if version not in bodies:
                    bodies[version] = json.dumps({**event, "api_version": version}, indent=2)
                body = bodies[version]
                for n in range(copies):
                    self._seq += 1
                    self._jobs.append(
                        Job(
                            seq=self._seq,
                            event_id=event["id"],
                            event_type=event["type"],
                            url=url,
                            secret=secret,
                            body=body,
                            endpoint_id=endpoint_id,
                            due=time.monotonic() + self.chaos.delay_ms / 1000.0,
                            held=self.chaos.hold,
                            duplicate=n > 0,
                        )
                    )
            self._cond.notify_all()

    def release(self) -> int:
        """Let held deliveries go; returns how many were released."""
        with self._cond:
            n = 0
            now = time.monotonic()
            for job in self._jobs:
                if job.held:
                    job.held = False
                    job.due = max(job.due, now)
                    n += 1
            self._cond.notify_all()
            return n

    def pending(self) -> dict:
        with self._cond:
            return {
                "queued": sum(1 for j in self._jobs if not j.held),
                "held": sum(1 for j in self._jobs if j.held),
                "in_flight": self._inflight,
            }

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is queued (held jobs excepted) or in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(not j.held for j in self._jobs) or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def clear(self) -> None:
        with self._cond:
            self._jobs.clear()
            self.attempts.clear()
            self.chaos = Chaos()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    # ------------------------------------------------------------ worker
    def _next_job(self) -> Job | None:
        """Called with the condition held: the job to run now, or None."""
        if self._inflight >= max(1, self.chaos.concurrency):
            return None
        now = time.monotonic()
        ready = [j for j in self._jobs if not j.held and j.due <= now]
        if not ready:
            return None
        job = random.choice(ready) if self.chaos.shuffle else min(ready, key=lambda j: (j.due, j.seq))
        self._jobs.remove(job)
        return job

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._stopped:
                    job = self._next_job()
                    if job:
                        break
                    waits = [j.due - time.monotonic() for j in self._jobs if not j.held]
                    self._cond.wait(max(0.005, min(waits)) if waits else None)
                if self._stopped:
                    return
                assert job is not None  # the wait loop only ends on a job or on stop
                self._inflight += 1
            try:
                self._deliver(job)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _deliver(self, job: Job) -> None:
        job.attempt += 1
        started = time.time()
        header = sign(job.body, job.secret)
        status: int | None = None
        error: str | None = None
        if job.attempt <= self.chaos.fail_first:
            error = "chaos: simulated network failure"
        else:
            req = urllib.request.Request(
                job.url,
                data=job.body.encode("utf-8"),
                method="POST",
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
            try:
                with _NO_REDIRECTS.open(req, timeout=self.timeout) as resp:
                    status = resp.status
                    resp.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
            except Exception as exc:  # connection refused, timeout, ...
                error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        record = {
            "event_id": job.event_id,
            "type": job.event_type,
            "url": job.url,
            "endpoint": job.endpoint_id,
            "attempt": job.attempt,
            "status_code": status,
            "error": error,
            "ok": ok,
            "duplicate": job.duplicate,
            "signature": header,
            "sent_at": started,
            "duration_ms": int((time.time() - started) * 1000),
        }
        with self._cond:
            self.attempts.append(record)
            if not ok and job.attempt < self.max_attempts:
                delay = self.retry_schedule[min(job.attempt - 1, len(self.retry_schedule) - 1)]
                job.due = time.monotonic() + delay
                self._jobs.append(job)
            record["will_retry"] = not ok and job.attempt < self.max_attempts
        if self.on_attempt:
            self.on_attempt(record)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stripe counts a redirect as a failed delivery; so do we."""

    def redirect_request(self, *args, **kwargs):  # noqa: D401
        return None


# No proxies: deliveries go to local receivers even when http_proxy is set.
_NO_REDIRECTS = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
