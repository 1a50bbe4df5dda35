"""gunicorn without PROMETHEUS_MULTIPROC_DIR: say so once at start.

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before the app is imported. gunicorn started without that file
(`--chdir` elsewhere, `-c` another file, a platform's own command line) with several workers leaves each worker its
own counters, so /metrics answers a different worker's figures at each scrape (counters that go up and down, alerts
that miss). The app cannot fix that after the fact (prometheus_client has already chosen its storage); it logs one
`metrics_multiprocess_dir_missing` warning, and `flask doctor` shows where the metrics are kept.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from app.logging import get_logger
from app.services.metrics import multiprocess_dir

log = get_logger(__name__)

EVENT = "metrics_multiprocess_dir_missing"


def under_gunicorn() -> bool:
    """Imported by gunicorn (its arbiter, or a worker): `SERVER_SOFTWARE` exists only in requests."""
    return "gunicorn.arbiter" in sys.modules or "gunicorn.app.base" in sys.modules


def _process_started(pid: int) -> str | None:
    """A pid's start time (clock ticks since boot, /proc/<pid>/stat field 22): with the pid, names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _arbiter_pid() -> int:
    """The gunicorn master's pid: this process with `preload_app`, else the parent of this worker."""
    parent = os.getppid()
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return os.getpid()
    return parent if b"gunicorn" in command else os.getpid()


def first_to_warn() -> bool:
    """True in one process only of a gunicorn start: without `preload_app` each worker imports the app, and the
    warning is one line, not one per worker. A marker file named after the master (pid and start time) decides;
    where /proc cannot tell, every process warns."""
    master = _arbiter_pid()
    started = _process_started(master)
    if started is None:
        return True
    marker = Path(tempfile.gettempdir()) / f"ssb-{EVENT}-{master}-{started}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def warn_if_metrics_split() -> bool:
    """Log the warning when running under gunicorn without PROMETHEUS_MULTIPROC_DIR; True when logged."""
    if not under_gunicorn() or multiprocess_dir():
        return False
    if not first_to_warn():
        return False
    log.warning(
        EVENT,
        message="gunicorn runs without PROMETHEUS_MULTIPROC_DIR: with several workers each keeps its own metrics and "
        "/metrics answers one worker's at a time; start it with gunicorn.conf.py (from the project root, or "
        "`-c deploy/gunicorn.conf.py`) or set PROMETHEUS_MULTIPROC_DIR to an empty writable directory",
    )
    return True
