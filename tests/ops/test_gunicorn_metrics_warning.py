"""gunicorn started without gunicorn.conf.py (here from another directory with `--chdir` to the project: gunicorn
looks for ./gunicorn.conf.py in the directory it starts in, before changing) runs several workers with no
PROMETHEUS_MULTIPROC_DIR: /metrics alternates between workers. The app says so in one warning line
at start; started with the config it says nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.ops.test_gunicorn import ROOT, free_port, get, served_env, spawn_gunicorn, wait_until_up

EVENT = "metrics_multiprocess_dir_missing"


def start(seeded, tmp_path: Path, args: list[str], port: int, cwd: Path = ROOT, **extra: str) -> list[str]:
    env = served_env(seeded, tmp_path, TMPDIR=str(tmp_path), **extra)
    log_path = tmp_path / f"gunicorn-{port}.log"
    process = spawn_gunicorn(args, env, log_path, cwd=cwd)
    try:
        wait_until_up(process, port, log_path)
        for _ in range(4):
            assert get(f"http://127.0.0.1:{port}/pricing")[0] == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return log_path.read_text().splitlines()


def test_gunicorn_without_its_config_warns_once(seeded, tmp_path):
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["--chdir", str(ROOT), "-w", "3", "-b", f"127.0.0.1:{port}"]
    lines = start(seeded, tmp_path, args, port, cwd=elsewhere)
    warnings = [line for line in lines if EVENT in line]
    assert len(warnings) == 1, "\n".join(lines)
    assert "PROMETHEUS_MULTIPROC_DIR" in warnings[0] and "gunicorn.conf.py" in warnings[0]
    assert sum("Booting worker" in line for line in lines) >= 3


def test_gunicorn_with_its_config_does_not_warn(seeded, tmp_path):
    port = free_port()
    lines = start(
        seeded,
        tmp_path,
        ["-c", "deploy/gunicorn.conf.py"],
        port,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
    )
    assert not [line for line in lines if EVENT in line], "\n".join(lines)
