"""Microseconds per entitlement check: a cache miss (database + cache write), a cache hit (one Redis GET), and the
per-request memo, in-process, on whatever DATABASE_URL / REDIS_URL say (SQLite and the in-process cache if unset).
With Redis, also what an API request's rate-limit hit and gate cost together, in CPU time: the gate taking the
entitlements the hit's script read, against the gate making its own MGET after the hit (an address's limit).

    DATABASE_URL=postgresql://… REDIS_URL=redis://… .venv/bin/python bench/entitlements.py [iterations]

Migrates and seeds the database it is pointed at, and uses one user, bench-entitlements@example.com.
`make bench` runs it against its own PostgreSQL and Redis and reports the figures (hit against miss) beside the
gunicorn throughput ratio of the gated endpoint to its ungated twin (bench/run.py, section 3).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_migrate import upgrade  # noqa: E402
from limits import parse  # noqa: E402

from app import create_app  # noqa: E402
from app.extensions import HitWindowRateLimiter, db, limiter  # noqa: E402
from app.services.accounts import create_user, find_user_by_email  # noqa: E402
from app.services.catalog import seed_plans_from_config  # noqa: E402
from app.services.entitlements import (  # noqa: E402
    get_entitlements,
    invalidate_entitlements_cache,
    require_feature,
)

EMAIL = "bench-entitlements@example.com"


def summary(name: str, samples: list[float]) -> str:
    """One line per figure; bench/run.py reads `median … µs` back from it."""
    us = sorted(s * 1e6 for s in samples)
    p95 = us[int(len(us) * 0.95) - 1]
    return f"{name:<34} median {statistics.median(us):9.1f} µs   p95 {p95:9.1f} µs   (n={len(us)})"


def main(iterations: int) -> None:
    app = create_app()
    with app.app_context():
        upgrade()
        seed_plans_from_config()
        user = find_user_by_email(EMAIL) or create_user(EMAIL, "bench-password-1")
        user_id = user.id
        backend = app.config["CACHE_TYPE"]
        engine = db.engine.url.get_backend_name()
    print(f"database: {engine}   cache: {backend}   iterations: {iterations}")

    misses, hits, memo, gate = [], [], [], []
    for _ in range(iterations):  # miss: a fresh app context (no memo) and no cache entry
        with app.app_context():
            invalidate_entitlements_cache(user_id)
        with app.app_context():
            t = time.perf_counter()
            get_entitlements(user_id)
            misses.append(time.perf_counter() - t)
            db.session.remove()
    for _ in range(iterations):  # hit: a fresh app context, the cache has it
        with app.app_context():
            t = time.perf_counter()
            get_entitlements(user_id)
            hits.append(time.perf_counter() - t)
    for _ in range(iterations):  # a whole gate check (what @requires_feature does) on a cache hit
        with app.app_context():
            t = time.perf_counter()
            require_feature(user_id, "paper_trading")
            gate.append(time.perf_counter() - t)
    with app.app_context():
        get_entitlements(user_id)
        for _ in range(iterations):  # the second read in the same request
            t = time.perf_counter()
            get_entitlements(user_id)
            memo.append(time.perf_counter() - t)
        db.engine.dispose()

    print(summary("miss (database + cache write)", misses))
    print(summary("hit (cache read + JSON decode)", hits))
    print(summary("gate check on a hit", gate))
    print(summary("memo (same request)", memo))
    if isinstance(limiter.limiter, HitWindowRateLimiter):
        with_hit, own_read = limited_gate(app, user_id, iterations)
        print(summary("limit + gate, read with the hit", with_hit) + "  CPU")
        print(summary("limit + gate, own MGET", own_read) + "  CPU")


def limited_gate(app, user_id: int, iterations: int) -> tuple[list[float], list[float]]:
    """CPU seconds of the API's per-user limit hit and the gate's check (`api_access`) in a request for the gated route, on a
    cache hit: counted for the user (the hit's script reads the entitlements), and for an address (the gate reads
    them itself), in turn."""
    item = parse("100000000 per minute")
    path = app.config["API_PREFIX"] + "/strategies"
    samples: dict[str, list[float]] = {"user": [], "addr": []}
    with app.app_context():
        invalidate_entitlements_cache(user_id)
        get_entitlements(user_id)  # cached
    for _ in range(iterations):
        for kind, identity in (("user", f"user:{user_id}"), ("addr", "addr:127.0.0.1")):
            with app.test_request_context(path):
                t = time.process_time()
                limiter.limiter.hit(item, identity, "api.list_strategies_api")
                get_entitlements(user_id).allows("api_access")  # the gate's check (a refusal would add its offer)
                samples[kind].append(time.process_time() - t)
    return samples["user"], samples["addr"]


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
