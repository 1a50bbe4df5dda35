"""Which statements of applying a webhook event cost more as the tables grow: make bench's growth section, one
statement at a time.

The bundled Stripe emulator (a process of its own, as in make bench) writes the history of GROUPS × customers
(bench/history.py); the app runs as in production (bench/request_overhead.py's `production_app`, WEBHOOK_APPLY=queue)
in this process on the PostgreSQL and Redis of `scripts/test-services.sh start DIR` (TEST_DATABASE_URL,
TEST_REDIS_URL; a database `ssb_growth` of its own is rebuilt). That PostgreSQL must load pg_stat_statements
(`shared_preload_libraries = 'pg_stat_statements'` and `pg_stat_statements.track = all` in its postgresql.conf, so
that the triggers' statements are counted too).

At each size the subscriptions are generated in SQL as make bench does (bench/growth.py's `grow`, then VACUUM
ANALYZE; with `--settle`, then `growth.settle` as make bench now does), and each of that size's groups of customers
has its events posted to the endpoint (recorded `received`: the "deliver" phase), then applied by the queue's drain
in this process (`drain_received`, as the worker's job runs it: the "apply" phase). Around each phase:
pg_stat_statements is reset before and read after; the CPU time of this process, of the database's backends and of
the emulator and Redis is taken (/proc/<pid>/stat: their own work, not their waits), with the time this process and
the backends waited for a CPU while runnable (/proc/<pid>/schedstat: the machine's load), and what the server's
background processes did meanwhile (checkpoints, buffers written, autovacuum runs).

Prints each phase's figures per group, then per statement its calls per event, mean server time per call and shared
buffers per call (hit + read from outside PostgreSQL's cache) at each size, the largest change of its time per event
first; then the totals per event. `--json PATH` writes every figure.

    scripts/test-services.sh start /tmp/DIR   (then add the two settings above to /tmp/DIR/pgdata/postgresql.conf
                                               and restart that PostgreSQL)
    .venv/bin/python bench/growth_statements.py [--customers 120] [--groups 2] [--sizes 10000,1000000] [--settle]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from redis import Redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.extensions import db, task_queue  # noqa: E402
from app.services.stripe_admin import ENDPOINT_EVENTS  # noqa: E402
from app.services.webhooks import drain_received  # noqa: E402
from bench import growth, history  # noqa: E402
from bench.request_overhead import production_app  # noqa: E402

WEBHOOK = "/api/v1/billing/webhooks/stripe"
HTTPS = "https://bench.example.com"
FIRST_USER_ID = 900_000_001  # far above the ids the growth step takes from the sequence
#: The processes the app talks to besides PostgreSQL (the emulator, Redis): their CPU over a phase is reported.
PEERS: dict[str, int] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator() -> tuple[subprocess.Popen, str]:
    """The emulator in a process of its own (its CPU is not this process's), and its URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--state", ":memory:", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(300):
        try:
            with opener.open(url + "/_emulator/health", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the Stripe emulator did not start")


def signed(body: bytes, secret: str) -> dict[str, str]:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"}


def run_queue_wait(pid: int | str = "self") -> float:
    """Seconds the process's threads have waited for a CPU while runnable (/proc/PID/task/*/schedstat): the
    machine's load, not the work's."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(task.read_text().split()[1])
        except (FileNotFoundError, IndexError):
            continue
    return total / 1e9


def kernel_writes() -> dict[str, int]:
    """The kernel's dirty page cache now (kB) and the pages it has written to disk so far (/proc/vmstat)."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    vmstat = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {"dirty_kb": int(meminfo["Dirty"].split()[0]), "written": int(vmstat.get("nr_written", 0))}


def server_cpu(monitor: psycopg.Connection, database: str) -> dict[str, float]:
    """CPU seconds used so far by the database's client backends (but the monitor's own) and by the server's
    background processes (checkpointer, background writer, WAL writer, autovacuum)."""
    rows = monitor.execute(
        "SELECT pid, backend_type = 'client backend' FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND (datname = %s OR backend_type <> 'client backend')",
        (database,),
    ).fetchall()
    return {
        "clients": sum(growth.process_cpu(pid) for pid, client in rows if client),
        "clients_waiting": sum(run_queue_wait(pid) for pid, client in rows if client),
        "background": sum(growth.process_cpu(pid) for pid, client in rows if not client),
    }


STATEMENTS = """
SELECT s.toplevel, s.query, s.calls, s.total_exec_time, s.shared_blks_hit, s.shared_blks_read, s.rows
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = %s AND s.query NOT LIKE '%%pg_stat_statements%%' AND s.query NOT LIKE '%%pg_stat_activity%%'
  AND s.query NOT LIKE '%%pg_stat_bgwriter%%'
"""


def statements(monitor: psycopg.Connection, database: str) -> list[dict]:
    return [
        {
            "toplevel": toplevel,
            "query": " ".join(query.split()),
            "calls": calls,
            "total_ms": total,
            "blocks_hit": hit,
            "blocks_read": read,
            "rows": rows,
        }
        for toplevel, query, calls, total, hit, read, rows in monitor.execute(STATEMENTS, (database,))
    ]


#: The server's background writes and autovacuum runs, summed (their change over a phase is what ran meanwhile).
BACKGROUND = """
SELECT b.checkpoints_timed + b.checkpoints_req, b.buffers_checkpoint + b.buffers_clean + b.buffers_backend,
       (SELECT sum(autovacuum_count + autoanalyze_count) FROM pg_stat_user_tables)
FROM pg_stat_bgwriter b
"""


def measured(monitor: psycopg.Connection, database: str, work) -> dict:
    """Run `work()` (which returns how many events it handled) with pg_stat_statements reset before it, and the CPU
    of this process, of the database's backends and of the server's background processes around it."""
    monitor.execute("SELECT pg_stat_statements_reset()")
    background = monitor.execute(BACKGROUND).fetchone()
    server, cpu, wall = server_cpu(monitor, database), time.process_time(), time.perf_counter()
    waited, kernel = run_queue_wait(), kernel_writes()
    peers = {name: growth.process_cpu(pid) for name, pid in PEERS.items()}
    events = work()
    peers = {name: growth.process_cpu(pid) - peers[name] for name, pid in PEERS.items()}
    cpu, wall, waited = time.process_time() - cpu, time.perf_counter() - wall, run_queue_wait() - waited
    server_after = server_cpu(monitor, database)
    after = monitor.execute(BACKGROUND).fetchone()
    return {
        "events": events,
        "app_cpu_s": cpu,
        "server_cpu_s": server_after["clients"] - server["clients"],
        "background_cpu_s": server_after["background"] - server["background"],
        "wall_s": wall,
        "app_run_queue_s": waited,
        "server_run_queue_s": server_after["clients_waiting"] - server["clients_waiting"],
        "peers_cpu_s": peers,
        "dirty_kb_at_start": kernel["dirty_kb"],
        "pages_written_by_kernel": kernel_writes()["written"] - kernel["written"],
        "checkpoints": after[0] - background[0],
        "buffers_written": after[1] - background[1],
        "autovacuum_runs": int(after[2] - background[2]),
        "statements": statements(monitor, database),
    }


def apply_group(app, client, monitor: psycopg.Connection, database: str, bodies: list[bytes]) -> dict:
    """Post the group's events (recorded `received`), then drain them in this process; both measured."""
    secret = app.config["STRIPE_WEBHOOK_SECRET"]

    def deliver() -> int:
        for body in bodies:
            response = client.post(WEBHOOK, data=body, headers=signed(body, secret), base_url=HTTPS)
            assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:300])
        return len(bodies)

    def apply() -> int:
        applied = 0
        with app.app_context():
            while True:  # a drain stops after DRAIN_LIMIT events: the next one goes on
                drained = drain_received(0)
                assert drained.failed == 0, drained
                applied += drained.applied
                if not drained.limited:
                    return applied

    with app.app_context():
        db.session.execute(text("SELECT 1"))  # the session's connection open before the backends' CPU is read
        db.session.rollback()
    delivered = measured(monitor, database, deliver)
    with app.app_context():
        task_queue().empty()  # the drains are run here, not by a worker
    applied = measured(monitor, database, apply)
    with app.app_context():
        waiting = db.session.scalar(text("SELECT count(*) FROM stripe_events WHERE status IN ('received', 'failed')"))
        db.session.execute(text("UPDATE mail_outbox SET status = 'sent' WHERE status = 'pending'"))
        db.session.commit()
        task_queue().empty()
    assert waiting == 0, waiting
    return {"deliver": delivered, "apply": applied}


def merged(runs: list[dict]) -> dict[tuple[bool, str], dict]:
    """Each statement's figures summed over the runs."""
    out: dict[tuple[bool, str], dict] = defaultdict(
        lambda: {"calls": 0, "total_ms": 0.0, "blocks_hit": 0, "blocks_read": 0, "rows": 0}
    )
    for run in runs:
        for s in run["statements"]:
            row = out[(s["toplevel"], s["query"])]
            for key in ("calls", "total_ms", "blocks_hit", "blocks_read", "rows"):
                row[key] += s[key]
    return out


def report(results: dict[int, list[dict]], phase: str, limit: int) -> None:
    """The phase's statements, largest growth of their time per event first (the first `limit`), then its totals."""
    sizes = sorted(results)
    small, large = sizes[0], sizes[-1]
    runs = {size: [group[phase] for group in results[size]] for size in sizes}
    by_size = {size: merged(runs[size]) for size in sizes}
    events = {size: sum(run["events"] for run in runs[size]) for size in sizes}
    keys = set().union(*(by_size[size].keys() for size in sizes))

    def per_event(size: int, key) -> float:
        row = by_size[size].get(key)
        return row["total_ms"] / events[size] if row else 0.0

    ranked = sorted(keys, key=lambda key: abs(per_event(large, key) - per_event(small, key)), reverse=True)
    print(f"\n=== {phase} ===")
    print("per statement: calls per event, mean ms per call (server time), shared blocks (hit+read) per call, at each")
    print(
        "size; Δ = the change of its time per event (ms) from the smallest size to the largest; nested = in a trigger\n"
    )
    for key in ranked[:limit]:
        cells = []
        for size in sizes:
            row = by_size[size].get(key)
            if row is None or not row["calls"]:
                cells.append(f"{size:>9,}: {'-':>37}")
                continue
            calls = row["calls"]
            cells.append(
                f"{size:>9,}: {calls / events[size]:5.2f}/ev {row['total_ms'] / calls:7.3f} ms "
                f"{(row['blocks_hit'] + row['blocks_read']) / calls:6.1f} blk ({row['blocks_read'] / calls:5.1f} rd)"
            )
        delta = per_event(large, key) - per_event(small, key)
        toplevel, query = key
        print(f"Δ {delta:+7.3f} ms/ev {'' if toplevel else '[nested] '}{query[:200]}")
        print("    " + " | ".join(cells))
    print(f"\n{phase}, per event:")
    for size in sizes:
        n = events[size]
        top = sum(r["total_ms"] for (toplevel, _), r in by_size[size].items() if toplevel)

        def ms(key: str, size: int = size, n: int = n) -> float:
            return 1000 * sum(r[key] for r in runs[size]) / n

        print(
            f"  {size:>9,}: {n} events; app CPU {ms('app_cpu_s'):.2f} ms, database backends' CPU "
            f"{ms('server_cpu_s'):.2f} ms (per group: "
            + ", ".join(f"{1000 * r['server_cpu_s'] / r['events']:.2f}" for r in runs[size])
            + f"), statements' server time {top / n:.2f} ms, wall {ms('wall_s'):.2f} ms of which waiting for a CPU "
            f"{ms('app_run_queue_s'):.2f} ms (the backends {ms('server_run_queue_s'):.2f} ms); meanwhile the server's "
            f"background processes used {sum(r['background_cpu_s'] for r in runs[size]):.2f} s of CPU, "
            f"{sum(r['checkpoints'] for r in runs[size])} checkpoints, "
            f"{sum(r['buffers_written'] for r in runs[size])} buffers written, "
            f"{sum(r['autovacuum_runs'] for r in runs[size])} autovacuum/analyze runs"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=120, help="customers per group (make bench: 120)")
    parser.add_argument("--groups", type=int, default=2, help="groups of customers applied at each size")
    parser.add_argument("--sizes", default="10000,1000000", help="generated subscriptions, comma-separated")
    parser.add_argument("--statements", type=int, default=40, help="statements of the apply phase listed")
    parser.add_argument(
        "--settle",
        action="store_true",
        help="after each size's growth: CHECKPOINT, then sync (the kernel writes its dirty pages) before the events",
    )
    parser.add_argument("--json", help="write every figure to this file")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    server_url = os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[0]
    database = "ssb_growth"
    with psycopg.connect(server_url + "/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.execute(f"CREATE DATABASE {database}")
    redis_url = os.environ["TEST_REDIS_URL"]
    Redis.from_url(redis_url).flushdb()

    emulator, emulator_url = start_emulator()
    PEERS["emulator"] = emulator.pid
    redis_pid = Path(os.environ.get("TEST_SERVICES_DIR", "/nonexistent"), "redis.pid")
    if redis_pid.exists():
        PEERS["redis"] = int(redis_pid.read_text())
    try:
        groups = options.groups * len(sizes)
        count = options.customers * groups
        started = time.monotonic()
        customers = history.generate(emulator_url, FIRST_USER_ID, count)
        events = history.events(emulator_url, tuple(ENDPOINT_EVENTS))
        print(f"history: {count} customers, {len(events)} events ({time.monotonic() - started:.0f} s)", flush=True)
        group_of = {c.customer_id: i // options.customers for i, c in enumerate(customers)}
        bodies: list[list[bytes]] = [[] for _ in range(groups)]
        for event in events:
            customer = history.customer_of(event)
            if customer in group_of:
                bodies[group_of[customer]].append(history.body_of(event).encode())

        app = production_app(f"{server_url}/{database}", redis_url, emulator_url)
        app.config["TASK_QUEUE_URL"] = redis_url
        app.config["WEBHOOK_APPLY"] = "queue"
        with app.app_context():
            growth.insert_customers(db.session, customers)
        client = app.test_client()
        monitor = psycopg.connect(f"{server_url}/{database}", autocommit=True)
        monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        results: dict[int, list[dict]] = {}
        so_far = 0
        for index, size in enumerate(sizes):
            started = time.monotonic()
            with app.app_context():
                with db.engine.begin() as connection:
                    growth.grow(connection, so_far + 1, size)
                db.session.remove()
            so_far = size
            monitor.execute(
                "VACUUM ANALYZE users, user_subscriptions, audit_logs, user_conversions, stripe_events, "
                "daily_counts, daily_subscription_changes"
            )
            if options.settle:
                settling = time.monotonic()
                with app.app_context():
                    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                        growth.settle(connection)
                print(f"  CHECKPOINT and sync: {time.monotonic() - settling:.1f} s", flush=True)
            print(f"{size:,} subscriptions ({time.monotonic() - started:.0f} s)", flush=True)
            results[size] = []
            for g in range(options.groups):
                run = apply_group(app, client, monitor, database, bodies[index * options.groups + g])
                results[size].append(run)
                for phase in ("deliver", "apply"):
                    figures, n = run[phase], run[phase]["events"]
                    print(
                        f"  group {g + 1}, {phase}: {n} events; per event: app CPU "
                        f"{1000 * figures['app_cpu_s'] / n:.2f} ms, database backends' CPU "
                        f"{1000 * figures['server_cpu_s'] / n:.2f} ms, wall {1000 * figures['wall_s'] / n:.2f} ms "
                        f"(waiting for a CPU: app {1000 * figures['app_run_queue_s'] / n:.2f} ms, backends "
                        f"{1000 * figures['server_run_queue_s'] / n:.2f} ms); "
                        + ", ".join(f"{name} CPU {1000 * v / n:.2f} ms" for name, v in figures["peers_cpu_s"].items())
                        + f"; kernel: {figures['dirty_kb_at_start'] // 1024} MB dirty at the start, "
                        f"{figures['pages_written_by_kernel'] * 4 // 1024} MB written",
                        flush=True,
                    )
        report(results, "deliver", 12)
        report(results, "apply", options.statements)
        if options.json:
            Path(options.json).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))
    finally:
        emulator.terminate()
        emulator.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
