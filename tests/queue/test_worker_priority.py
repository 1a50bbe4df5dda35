"""`flask queue worker --nice N`: a worker beside gunicorn on one host gives the web processes the CPU first.

`nice -n 10 flask queue worker` did not: with the kernel's autogroups on, the CPU is shared between sessions before
nice orders a session's own processes, and a worker in a session of its own took as much CPU as gunicorn's whole
session. The worker now lowers its session's autogroup too (its own session: nobody else's priority changes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.queue.test_worker import ROOT, free_port, start_worker, wait_for

AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")


def process_nice(pid: int) -> int:
    """The process's nice (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def autogroup(pid: int) -> str:
    """`/autogroup-N nice K` of the process."""
    return Path(f"/proc/{pid}/autogroup").read_text().strip()


def output_until(worker: subprocess.Popen, text: str, seconds: float) -> str:
    """What the worker printed until `text` appears (or it exits, or `seconds` pass), read without waiting on it."""
    descriptor = worker.stdout.fileno()  # type: ignore[union-attr]
    os.set_blocking(descriptor, False)
    printed = b""
    deadline = time.monotonic() + seconds
    while text.encode() not in printed and time.monotonic() < deadline:
        try:
            chunk = os.read(descriptor, 65536)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:  # the worker's output closed
            break
        printed += chunk
    return printed.decode(errors="replace")


def autogroups_on() -> bool:
    return AUTOGROUPS.exists() and AUTOGROUPS.read_text().strip() == "1"


def stop(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def test_nice_lowers_the_worker_and_its_own_autogroup_only(migrated_database, redis_url):
    ours = autogroup(os.getpid())
    worker = start_worker(migrated_database, redis_url, free_port(), "worker", "--nice", "10")
    try:
        assert wait_for(lambda: worker.poll() is not None or process_nice(worker.pid) == 10, 30), "nice never set"
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
        if autogroups_on():
            assert wait_for(lambda: autogroup(worker.pid).endswith("nice 10"), 10), autogroup(worker.pid)
            assert os.getsid(worker.pid) == worker.pid  # a session of its own, so the group is the worker's alone
            assert autogroup(os.getpid()) == ours  # the test's own session (which started it) keeps its priority
    finally:
        stop(worker)


def test_a_niced_worker_holds_its_batches_while_the_host_is_busy(migrated_database, redis_url):
    """Beside the web processes, nice alone slowed the requests (its database backend's part of a drain is not
    niced): the worker also holds its batches back while the host is busy (app/tasks.py `BusyHostGate`), and says
    so as it starts."""
    worker = start_worker(migrated_database, redis_url, free_port(), "worker", "--nice", "10", LOG_LEVEL="INFO")
    try:
        started = b""
        while b"queue_worker_priority_lowered" not in started and worker.stderr is not None:
            line = worker.stderr.readline()
            if not line:
                break
            started = line
        assert b"batches_held_while_host_busy='2 s at most'" in started, started
    finally:
        stop(worker)


def test_worker_nice_from_the_environment(migrated_database, redis_url):
    worker = start_worker(migrated_database, redis_url, free_port(), "worker", WORKER_NICE="7")
    try:
        assert wait_for(lambda: worker.poll() is not None or process_nice(worker.pid) == 7, 30), "nice never set"
        assert worker.poll() is None
    finally:
        stop(worker)


@pytest.mark.skipif(not autogroups_on(), reason="the kernel's autogroups are off")
def test_a_worker_leading_its_process_group_leaves_the_shared_autogroup_alone(migrated_database, redis_url):
    """A shell's foreground job leads its process group and cannot start a session: its autogroup (the terminal's,
    shared with whatever else runs there) keeps its nice, and the worker lowers only its own process."""
    env = {
        **os.environ,
        "FLASK_APP": "wsgi:app",
        "ENVIRONMENT": "testing",
        "DATABASE_URL": migrated_database,
        "REDIS_URL": redis_url,
        "TASK_QUEUE_URL": redis_url,
        "LOG_LEVEL": "INFO",
    }
    ours = autogroup(os.getpid())
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "queue", "worker", "--nice", "10"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,  # its own process group, in the test's session: as a shell's job
    )
    said = "process only (its session is shared"
    try:
        assert wait_for(lambda: worker.poll() is not None or process_nice(worker.pid) == 10, 30), "nice never set"
        assert worker.poll() is None
        assert os.getsid(worker.pid) == os.getsid(0)
        assert autogroup(worker.pid) == ours  # shared, so left as it was
        # The worker lowers its nice, then says so: its line is awaited before it is stopped.
        output = output_until(worker, said, 30)
    finally:
        stop(worker)
    assert said in output, output
