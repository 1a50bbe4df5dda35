"""The webhook endpoint's CPU per event, against the floor's, in one process (no server, no network).

A life cycle per customer — created (activation mail), invoice.paid, cancel scheduled (mail), resumed, renewed,
deleted (ended mail) — signed and posted through the app's WSGI callable (Werkzeug's test client) to the real
endpoint, then the same bodies to the floor route (signature check + one INSERT of the raw event + commit, as
bench/wsgi_bench.py's `/bench/webhook-floor`). The app runs as in production (JSON logs written to /dev/null,
Redis caches, mail handed to the task queue on Redis) on the PostgreSQL and Redis of
`scripts/test-services.sh start DIR` (TEST_DATABASE_URL, TEST_REDIS_URL; the schema is rebuilt and seeded).
Figures are per second of this process's CPU time, so other processes on a loaded machine move them less than
wall-clock time would (the servers' own CPU is not in them). `--profile` adds a cProfile of the endpoint,
`--profile-worker` one of the queue worker's drains (both in CPU time, by cumulative then own time).

`--apply queue` runs the endpoint with WEBHOOK_APPLY=queue (it records each event and enqueues its lane's drain when
none is pending), then the drains in this process by RQ's SimpleWorker (as `flask queue worker` runs them, on the
same Redis): the worker's CPU per applied event is reported beside the endpoint's, with the number of drain jobs.
The drains' CPU includes the enqueue of the mail-delivery jobs (or, one waiting, the `mail_delivery_pending` flag's
SET NX that finds it set); the mail jobs themselves are counted (`mail_jobs`), then run by the same worker with the
outbox's rows marked sent first (no SMTP here; sending costs the same however many jobs there are): their CPU per
event is `mail_job_cpu_ms_per_event`, RQ's bookkeeping and the outbox read, per job. The worker's other half of
the cost is PostgreSQL's: `worker_pg_cpu_ms_per_event` is the CPU time the database server's processes (the
backends, the WAL writer; read from /proc, so the server must run on this host) spent while the drains ran, and
`worker_statements_per_event` / `worker_transactions_per_event` count what the drains sent through SQLAlchemy (its
cursor executions; commits; BEGIN, implicit, is one more round trip per transaction, and the savepoint a batched
event's handler runs under, sent on the driver's own cursor, one more per handled event). Each half of the events
is posted before the worker runs: a burst, drained by at most one job per lane. `--apply request` (the default)
applies each event in its request.

    .venv/bin/python bench/webhook_cpu.py [--customers 150] [--apply request|queue] [--profile] [--profile-worker]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import SimpleWorker  # noqa: E402
from sqlalchemy import event as sa_event  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.extensions import csrf, db, limiter, task_queue  # noqa: E402
from app.models import User  # noqa: E402
from app.services.mail import DELIVER_TASK  # noqa: E402
from app.services.stripe_gateway import API_VERSION  # noqa: E402
from app.services.webhooks import DRAIN_TASK  # noqa: E402
from bench.baselines import receive_raw_event  # noqa: E402
from bench.request_overhead import production_app  # noqa: E402

WEBHOOK = "/api/v1/billing/webhooks/stripe"
FLOOR = "/bench/webhook-floor"
HTTPS = "https://bench.example.com"
T0 = 1798761600  # 2027-01-01
MONTH = 31 * 86400


def add_floor(app) -> None:
    """bench/wsgi_bench.py's floor route, on this app."""

    app.post(FLOOR)(csrf.exempt(limiter.exempt(receive_raw_event)))


def subscription(n: int, start: int, **extra) -> dict:
    item = {"id": f"si_{n}", "price": {"id": "price_pro_monthly"}, "current_period_start": start}
    item["current_period_end"] = start + MONTH
    return {
        "id": f"sub_cpu_{n}",
        "object": "subscription",
        "customer": f"cus_cpu_{n}",
        "status": "active",
        "items": {"object": "list", "data": [item]},
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "cancellation_details": {"reason": None},
        **extra,
    }


def life_cycle(n: int) -> list[dict]:
    """One customer's events, in order, one second apart."""
    invoice = {
        "id": f"in_cpu_{n}",
        "object": "invoice",
        "customer": f"cus_cpu_{n}",
        "amount_paid": 4999,
        "currency": "usd",
        "parent": {"subscription_details": {"subscription": f"sub_cpu_{n}"}},
    }
    objects = [
        ("customer.subscription.created", subscription(n, T0)),
        ("invoice.paid", invoice),
        ("customer.subscription.updated", subscription(n, T0, cancel_at_period_end=True)),
        ("customer.subscription.updated", subscription(n, T0)),
        ("customer.subscription.updated", subscription(n, T0 + MONTH)),
        ("customer.subscription.deleted", subscription(n, T0 + MONTH, status="canceled", ended_at=T0 + MONTH)),
    ]
    return [
        {
            "id": f"evt_cpu_{n}_{k}",
            "object": "event",
            "type": kind,
            "api_version": API_VERSION,
            "created": T0 + n * 10 + k,
            "livemode": False,
            "data": {"object": obj},
        }
        for k, (kind, obj) in enumerate(objects)
    ]


def signed(body: bytes, secret: str) -> dict[str, str]:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


def post_all(client, path: str, bodies: list[bytes], secret: str) -> float:
    """CPU seconds of posting every body (each must answer 200)."""
    started = time.process_time()
    for body in bodies:
        response = client.post(path, data=body, headers=signed(body, secret), base_url=HTTPS)
        assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:300])
    return time.process_time() - started


TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds (user + system) of the PostgreSQL server's processes alive now: the postmaster's children (a
    process that ended meanwhile, such as an autovacuum worker, is left out)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:  # fields[1] is the ppid, [11] utime, [12] stime
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def postmaster_pid() -> int:
    """The database server's postmaster: the parent of this session's backend."""
    backend = db.session.scalar(text("SELECT pg_backend_pid()"))
    db.session.rollback()
    with open(f"/proc/{backend}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class Counted:
    """The statements, savepoints and commits sent on the app's engine while counting."""

    def __init__(self, engine) -> None:
        self.statements = self.commits = self.savepoints = 0
        sa_event.listen(engine, "before_cursor_execute", self.statement)
        sa_event.listen(engine, "commit", self.commit)
        sa_event.listen(engine, "savepoint", self.savepoint)
        sa_event.listen(engine, "release_savepoint", self.savepoint)
        sa_event.listen(engine, "rollback_savepoint", self.savepoint)

    def statement(self, *args) -> None:
        self.statements += 1

    def commit(self, *args) -> None:
        self.commits += 1

    def savepoint(self, *args) -> None:
        self.savepoints += 1


def work(
    app, profiler: cProfile.Profile | None = None, counted: Counted | None = None
) -> tuple[float, int, float, int, float, tuple[int, int, int]]:
    """CPU seconds of a worker running the drains queued now (at most one per lane: each applies every event it
    finds), and how many there were; then those of the mail jobs the events enqueued, run once the outbox's rows are
    marked sent, and how many; last the database server's CPU seconds during the drains. With `profiler`, the
    worker's run of the drains is profiled (RQ's bookkeeping and the drains)."""
    with app.app_context():
        postmaster = postmaster_pid()
        queue = task_queue()
        assert queue is not None
        jobs = queue.count
        assert {job.func_name for job in queue.get_jobs()} == {DRAIN_TASK}, [job.func_name for job in queue.get_jobs()]
        worker = SimpleWorker([queue], connection=queue.connection)
        server_started = server_cpu(postmaster)
        started = time.process_time()
        if counted is not None:
            counted.statements = counted.commits = counted.savepoints = 0
        if profiler is not None:
            profiler.enable()
        worker.work(burst=True, max_jobs=jobs, logging_level="WARNING")
        if profiler is not None:
            profiler.disable()
        seconds = time.process_time() - started
        server_seconds = server_cpu(postmaster) - server_started
        counts = (counted.statements, counted.commits, counted.savepoints) if counted is not None else (0, 0, 0)
        waiting = db.session.scalar(text("SELECT count(*) FROM stripe_events WHERE status IN ('received', 'failed')"))
        db.session.execute(text("UPDATE mail_outbox SET status = 'sent' WHERE status = 'pending'"))
        db.session.commit()
        assert waiting == 0 and queue.failed_job_registry.count == 0, (waiting, queue.failed_job_registry.count)
        mail_jobs = queue.count
        assert {job.func_name for job in queue.get_jobs()} <= {DELIVER_TASK}
        started = time.process_time()
        worker.work(burst=True, max_jobs=mail_jobs, logging_level="WARNING")
        mail_seconds = time.process_time() - started
        assert queue.count == 0 and queue.failed_job_registry.count == 0
    return seconds, jobs, mail_seconds, mail_jobs, server_seconds, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=150)
    parser.add_argument("--apply", choices=("request", "queue"), default="request", help="WEBHOOK_APPLY")
    parser.add_argument("--profile", action="store_true", help="cProfile the endpoint (CPU time)")
    parser.add_argument("--profile-worker", action="store_true", help="cProfile the queue worker's drains (CPU time)")
    options = parser.parse_args()
    queued = options.apply == "queue"
    if options.profile_worker and not queued:
        parser.error("--profile-worker needs --apply queue")
    redis_url = os.environ["TEST_REDIS_URL"]
    Redis.from_url(redis_url).flushdb()  # no duplicate marks from an earlier run
    app = production_app(os.environ["TEST_DATABASE_URL"], redis_url)
    app.config["TASK_QUEUE_URL"] = redis_url  # mail goes to the task queue, as in production
    app.config["WEBHOOK_APPLY"] = options.apply
    add_floor(app)
    secret = app.config["STRIPE_WEBHOOK_SECRET"]
    warm = 10
    with app.app_context():
        db.session.execute(text("CREATE TABLE bench_raw_events (LIKE stripe_events INCLUDING ALL)"))
        for n in range(options.customers + warm):
            db.session.add(User(email=f"cpu{n}@example.com", password_hash="x", stripe_customer_id=f"cus_cpu_{n}"))
        db.session.commit()
    client = app.test_client()
    bodies = [[json.dumps(event).encode() for event in life_cycle(n)] for n in range(options.customers + warm)]
    # Warm-up: every statement shape compiled once, pools filled; then, interleaved by step, both routes.
    warming = [b for cycle in bodies[:warm] for b in cycle]
    post_all(client, WEBHOOK, warming, secret)
    if queued:
        work(app)
    else:
        with app.app_context():
            task_queue().empty()  # the mail jobs: no worker here
    post_all(client, FLOOR, warming, secret)
    measured = bodies[warm:]
    events = sum(len(cycle) for cycle in measured)
    endpoint = floor = worker = mailer = server = 0.0
    drains = mail_jobs = statements = commits = savepoints = 0
    with app.app_context():
        counted = Counted(db.engine)
    # CPU time, not wall-clock: on a shared machine the figures are this process's own work.
    profiler = cProfile.Profile(time.process_time) if options.profile else None
    worker_profiler = cProfile.Profile(time.process_time) if options.profile_worker else None
    for half in (measured[: len(measured) // 2], measured[len(measured) // 2 :]):
        flat = [b for cycle in half for b in cycle]
        if profiler is not None:
            profiler.enable()
        endpoint += post_all(client, WEBHOOK, flat, secret)
        if profiler is not None:
            profiler.disable()
        if queued:
            seconds, jobs, mail_seconds, mailed, server_seconds, counts = work(app, worker_profiler, counted)
            worker += seconds
            server += server_seconds
            statements += counts[0]
            commits += counts[1]
            savepoints += counts[2]
            drains += jobs
            mailer += mail_seconds
            mail_jobs += mailed
        floor += post_all(client, FLOOR, flat, secret)
    with app.app_context():
        statuses = dict(db.session.execute(text("SELECT status, count(*) FROM stripe_events GROUP BY status")).all())
        mails = db.session.scalar(text("SELECT count(*) FROM mail_outbox"))
    report = {
        "apply": options.apply,
        "events": events,
        "endpoint_cpu_ms_per_event": round(1000 * endpoint / events, 3),
        "floor_cpu_ms_per_event": round(1000 * floor / events, 3),
        "cpu_ratio_floor_to_endpoint": round(floor / endpoint, 3),
        **(
            {
                "worker_cpu_ms_per_event": round(1000 * worker / events, 3),
                "worker_pg_cpu_ms_per_event": round(1000 * server / events, 3),
                "worker_statements_per_event": round(statements / events, 2),
                "worker_savepoints_per_event": round(savepoints / events, 2),
                "worker_transactions_per_event": round(commits / events, 3),
                "drain_jobs": drains,
                "mail_job_cpu_ms_per_event": round(1000 * mailer / events, 3),
                "mail_jobs": mail_jobs,
            }
            if queued
            else {}
        ),
        "statuses": statuses,
        "mails": mails,
        "load": [round(x, 1) for x in os.getloadavg()],
    }
    print(json.dumps(report))
    for name, profiled in (("endpoint", profiler), ("worker", worker_profiler)):
        if profiled is not None:
            out = io.StringIO()
            print(f"--- {name} profile (CPU seconds) ---")
            pstats.Stats(profiled, stream=out).sort_stats("cumulative").print_stats(45)
            pstats.Stats(profiled, stream=out).sort_stats("tottime").print_stats(30)
            print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
