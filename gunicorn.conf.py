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
import shutil
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
# Must be in the environment before prometheus_client is first imported (by the preloaded app).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ssb-prometheus-")
elif not os.environ.get("_SSB_PROMETHEUS_DIR_CLEARED"):
    # Files of a previous run would add their old counts to this one's; clear once per master, not on reload.
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.is_dir():
        for item in directory.iterdir():
            if item.is_file() and item.suffix == ".db":
                item.unlink()
            elif item.is_dir():
                shutil.rmtree(item)
    directory.mkdir(parents=True, exist_ok=True)
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
