"""gunicorn settings for production, read by gunicorn itself from the working directory: `gunicorn wsgi:app`
(any `-w 2` or `--bind` on the command line overrides the value here; `-c deploy/gunicorn.conf.py` is the same file).

Every value can be changed from the environment (PORT, WEB_CONCURRENCY, GUNICORN_TIMEOUT, …) so a platform's
usual variables work. Logs go through the app's structlog setup (JSON lines when ENVIRONMENT=production);
gunicorn's access log is off because the app writes one `request_completed` line per request with its request
id (set GUNICORN_ACCESS_LOG=true to have gunicorn's as well). Prometheus metrics of all workers are added up
from files in PROMETHEUS_MULTIPROC_DIR, which this file prepares before the app is imported.
"""

import logging
import multiprocessing
import os
import re
import sys
import tempfile
from pathlib import Path

from gunicorn import glogging

# The project root on sys.path, so `wsgi` and `app.logging` import whatever directory gunicorn starts in.
ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _int(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _bool(name, default=False):
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


# --- Server -------------------------------------------------------------------------------------------------
# Loopback unless told otherwise: a proxy on the same host forwards to it, and nobody reaches the app around
# the proxy. In a container, or behind a load balancer on another host, set GUNICORN_BIND=0.0.0.0:8000 and list
# the proxy in TRUSTED_PROXIES (whose X-Forwarded-* headers the app reads) and FORWARDED_ALLOW_IPS.
bind = os.environ.get("GUNICORN_BIND") or f"127.0.0.1:{_int('PORT', 8000)}"
workers = _int("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1)
worker_class = "sync"  # each request on its own process; the app does blocking I/O (PostgreSQL, Stripe)
timeout = _int("GUNICORN_TIMEOUT", 30)  # a worker silent this long is killed and replaced
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)  # a little above nothing: the load balancer reuses connections
max_requests = _int("GUNICORN_MAX_REQUESTS", 1000)  # recycle workers now and then (slow leaks)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 100)
limit_request_line = 8190
# Import the app once in the master: a broken configuration stops the start with its message (exit status 4)
# instead of every worker failing in a loop, and workers share the loaded code.
preload_app = True
# The load balancer's X-Forwarded-* are handled by the app's ProxyFix; gunicorn need not trust any address.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# --- Prometheus multiprocess mode ----------------------------------------------------------------------------
#: prometheus_client's file of one process: `counter_1234.db`, `gauge_livesum_1234.db`, `histogram_1234.db`, …
METRIC_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as stat:
            return next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _process_start(pid: int, boot: float | None) -> float | None:
    """When `pid` started (seconds since the epoch, to the clock tick; boot time is whole seconds), or None when
    /proc cannot tell (not Linux)."""
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def stale_metric_files(directory: Path) -> list[Path]:
    """The metric files in `directory` of processes no longer running: a previous run's, which would add their old
    counts to this one's. A live process's are kept (a queue worker or a second gunicorn sharing the directory:
    deleting them lost the worker's counters at every gunicorn restart). A pid in use again by a process that started
    after the file last changed is another process (the owner was alive when it wrote the file, and two live
    processes never share a pid): its file is stale too. Boot time is whole seconds, hence the 2 s of slack."""
    boot = _boot_time()
    stale = []
    for item in directory.iterdir():
        found = METRIC_FILE.match(item.name)
        if not found or not item.is_file():
            continue
        pid = int(found.group(1))
        if pid == os.getpid() or not _alive(pid):
            stale.append(item)
            continue
        started = _process_start(pid, boot)
        try:
            changed = item.stat().st_ctime
        except FileNotFoundError:
            continue
        if started is not None and started > changed + 2:
            stale.append(item)
    return stale


# Must be in the environment before prometheus_client is first imported (by the preloaded app).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ssb-prometheus-")
elif not os.environ.get("_SSB_PROMETHEUS_DIR_CLEARED"):
    # Files of a previous run would add their old counts to this one's; cleared once per master, not on reload.
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for item in stale_metric_files(directory):
        item.unlink(missing_ok=True)
os.environ["_SSB_PROMETHEUS_DIR_CLEARED"] = "1"


def child_exit(server, worker):
    """A dead worker's live gauges must not linger; its counters stay (they are summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# --- Logging -------------------------------------------------------------------------------------------------
# gunicorn's own lines (start, worker boots, timeouts) through the same formatter as the app's.
accesslog = "-" if _bool("GUNICORN_ACCESS_LOG") else None
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structlog": {
            "()": "app.logging.build_formatter",
            "json": os.environ.get("ENVIRONMENT", "development").strip().lower() == "production",
        },
    },
    "handlers": {
        # Named "ssb" like the app's own handler, so the app replaces it instead of adding a second one.
        "ssb": {"class": "logging.StreamHandler", "formatter": "structlog", "stream": "ext://sys.stderr"},
    },
    "root": {"level": loglevel.upper(), "handlers": ["ssb"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": [], "propagate": True},
        "gunicorn.access": {
            "level": "INFO" if accesslog else "CRITICAL",
            "handlers": [],
            "propagate": True,
        },
    },
}


class _QuietAccessLogger(glogging.Logger):
    """gunicorn's logger, whose access line is worked out only when it is written. gunicorn counts a logging
    configuration (ours: `logconfig_dict`) as "access log on" and builds every request's line (its atoms, a date,
    the headers) before `gunicorn.access`, at CRITICAL when GUNICORN_ACCESS_LOG is off, drops it: several per cent
    of a worker's time per request, for nothing. Here the line is built only when that logger takes INFO."""

    def setup(self, cfg):
        super().setup(cfg)
        self._access_log_enabled = self._access_log_enabled and self.access_log.isEnabledFor(logging.INFO)


logger_class = _QuietAccessLogger
