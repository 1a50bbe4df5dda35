"""A PROMETHEUS_MULTIPROC_DIR shared with a co-located queue worker: gunicorn's start clears only the files of
processes no longer running.

The operator review: gunicorn.conf.py deleted every *.db file at start, so each gunicorn restart lost the queue
worker's counters (its files are in the same directory and it keeps running).
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.test_gunicorn import ROOT, free_port, get, spawn_gunicorn, wait_until_up

WORKER = """
import sys, time
from prometheus_client import Counter
Counter("ssb_test_worker_jobs", "jobs of a co-located worker").inc(3)
print("ready", flush=True)
time.sleep(120)
"""


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_gunicorn_start_keeps_a_live_workers_metric_files_and_clears_the_dead(seeded, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env_common = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER], env=env_common, stdout=subprocess.PIPE, text=True)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    process = None
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        worker_file = metrics_dir / f"counter_{worker.pid}.db"
        assert worker_file.exists()
        stale = metrics_dir / f"counter_{dead_pid()}.db"
        stale.write_bytes(worker_file.read_bytes())  # a finished process's file: its counts are a previous run's
        env = {
            **env_common,
            "ENVIRONMENT": "testing",
            "DATABASE_URL": seeded.config["DATABASE_URL"],
            "REDIS_URL": seeded.config["REDIS_URL"],
            "STRIPE_API_BASE": seeded.config.get("STRIPE_API_BASE") or "",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "1",
        }
        process = spawn_gunicorn(["-c", "deploy/gunicorn.conf.py"], env, log_path)
        wait_until_up(process, port, log_path)
        assert worker_file.exists(), "the running worker's counters were deleted"
        assert not stale.exists(), "a dead process's file was kept: its old counts would be added again"
        status, body, _ = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "ssb_test_worker_jobs_total 3.0" in body, body[:2000]
    finally:
        if process is not None:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)
        worker.kill()
        worker.wait(timeout=10)


def stale_metric_files(monkeypatch, directory: Path):
    """gunicorn.conf.py's own function, loaded as gunicorn loads the file (its environment changes undone after)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setenv("_SSB_PROMETHEUS_DIR_CLEARED", "1")  # load only: clear nothing
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))["stale_metric_files"](directory)


def test_a_pid_used_again_by_a_process_started_after_the_file_is_not_its_owner(monkeypatch, tmp_path):
    """A pid recycled by an unrelated process: the file predates that process, so its owner is gone."""
    last_pid = Path("/proc/sys/kernel/ns_last_pid")
    for _ in range(5):
        wanted = dead_pid() + 50
        file = tmp_path / f"counter_{wanted}.db"
        file.write_bytes(b"")
        # The file's ctime, then the new process's start, more than the 2 s of slack apart even when the boot time
        # (whole seconds in /proc/stat) puts the start up to a second early.
        time.sleep(3.5)
        try:
            last_pid.write_text(str(wanted - 1))
        except OSError:
            pytest.skip("cannot choose the next pid here (/proc/sys/kernel/ns_last_pid needs CAP_SYS_ADMIN)")
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            if sleeper.pid != wanted:  # another process took it first: try again
                file.unlink()
                continue
            live = tmp_path / f"gauge_livesum_{os.getppid()}.db"  # the parent of the tests: alive, older than the file
            live.write_bytes(b"")
            assert stale_metric_files(monkeypatch, tmp_path) == [file]
            return
        finally:
            sleeper.kill()
            sleeper.wait()
    pytest.fail("could not get the chosen pid in 5 tries")
