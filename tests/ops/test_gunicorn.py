"""gunicorn.conf.py for real: gunicorn with two workers, metrics added up across them, structlog lines — with
`-c deploy/gunicorn.conf.py`, and as the README starts it (`gunicorn wsgi:app -w 2`, the root config read by
gunicorn itself)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def served_env(seeded, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a gunicorn serving the suite's database, Redis and Stripe emulator (and `extra`)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ENVIRONMENT": "testing",
        "DATABASE_URL": seeded.config["DATABASE_URL"],
        "REDIS_URL": seeded.config["REDIS_URL"],
        "STRIPE_API_BASE": seeded.config.get("STRIPE_API_BASE") or "",
        **extra,
    }


def spawn_gunicorn(args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> subprocess.Popen:
    """`gunicorn ARGS wsgi:app` in a session of its own (stopped with `os.killpg`), its output in `log_path`."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [str(ROOT / ".venv/bin/gunicorn"), *args, "wsgi:app"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_gunicorn_serves_the_app_with_multiprocess_metrics_and_structured_logs(seeded, tmp_path):
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a previous run's file: cleared at start
    env = served_env(
        seeded,
        tmp_path,
        PORT=str(port),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    log_path = tmp_path / "gunicorn.log"
    process = spawn_gunicorn(["-c", "deploy/gunicorn.conf.py"], env, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
        assert status == 200
        for _ in range(6):
            status, _, headers = get(f"http://127.0.0.1:{port}/pricing")
            assert status == 200 and headers["X-Request-ID"]
        status, body, _ = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "billing_checkout_sessions_created_total 0.0" in body
        assert 'stripe_webhook_events_total{outcome="processed",type="checkout.session.completed"} 0.0' in body
        assert "billing_mrr_dollars 0.0" in body
        assert "process_resident_memory_bytes" not in body  # multiprocess registry, not the per-process one
        assert not (metrics_dir / "counter_99999.db").exists()
        assert list(metrics_dir.glob("*.db")), "workers write their metric files here"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    lines = log_path.read_text().splitlines()
    assert any("Booting worker" in line and "[gunicorn.error]" in line for line in lines), lines[:5]
    requests = [line for line in lines if "request_completed" in line and "path=/pricing" in line]
    assert len(requests) == 6 and all("request_id=" in line for line in requests)
    assert not any(line.startswith("[20") for line in lines), "gunicorn's own format leaked through"


def wait_until_up(process, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            get(f"http://127.0.0.1:{port}/healthz")
            return
        except OSError:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)


def test_the_readme_command_adds_up_both_workers_metrics(seeded, tmp_path):
    """`gunicorn wsgi:app -w 2` typed as is: every scrape, whichever worker answers it, counts every delivery."""
    port = free_port()
    env = served_env(
        seeded,
        tmp_path,
        PATH=f"{ROOT / '.venv/bin'}{os.pathsep}{os.environ['PATH']}",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        STRIPE_WEBHOOK_SECRET="whsec_" + "r" * 32,
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            "gunicorn wsgi:app -w 2",
            shell=True,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_up(process, port, log_path)
        for _ in range(5):  # unsigned deliveries, spread over both workers
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/billing/webhooks/stripe",
                data=b"{}",
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as error:
                assert error.code == 400
        counted = set()
        for _ in range(8):
            status, body, _ = get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert "process_resident_memory_bytes" not in body  # the summed multiprocess registry answers
            line = next(
                line
                for line in body.splitlines()
                if line.startswith('stripe_webhook_events_total{outcome="invalid_signature",type="unknown"}')
            )
            counted.add(line.rsplit(" ", 1)[1])
        assert counted == {"5.0"}, counted
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_no_access_line_is_worked_out_while_the_access_log_is_off(monkeypatch, tmp_path):
    """gunicorn builds each request's access line whenever a logging configuration is given, even with its logger
    at CRITICAL: our logger class builds it only when GUNICORN_ACCESS_LOG turns the access log on."""
    import runpy

    from gunicorn.config import Config

    # The config file prepares the metrics directory in the environment: a directory of this test's, restored after.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("_SSB_PROMETHEUS_DIR_CLEARED", "1")
    for setting, expected in (("false", False), ("true", True)):
        monkeypatch.setenv("GUNICORN_ACCESS_LOG", setting)
        settings = runpy.run_path(str(ROOT / "deploy/gunicorn.conf.py"))
        config = Config()
        for name in ("accesslog", "logconfig_dict", "loglevel", "logger_class"):
            config.set(name, settings[name])
        logger = config.logger_class(config)
        assert logger.access_log_enabled is expected
        calls = []
        monkeypatch.setattr(logger, "atoms", lambda *args, calls=calls: calls.append(args) or {})
        logger.access(None, None, {}, None)
        assert bool(calls) is expected
