"""Fault-suite helpers: stopping and starting the suite's real PostgreSQL and Redis, gunicorn in a subprocess,
waiting for the emulator's deliveries, and reading back what the app recorded.

Every helper that stops a service has a fixture or a `finally` that starts it again: the tests after these ones
need PostgreSQL and Redis running.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

ROOT = Path(__file__).resolve().parents[2]
#: One password hash for every generated user (hashing 200 passwords would take longer than the test).
PASSWORD_HASH = generate_password_hash("correct horse")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def http(
    method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10
) -> tuple[int, str, dict]:
    """(status, body, headers) without raising on 4xx/5xx and without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


# --- PostgreSQL and Redis of the suite (scripts/test-services.sh) -------------------------------------------------


class Services:
    """Stop and start the suite's own PostgreSQL and Redis, with the options scripts/test-services.sh uses."""

    def __init__(self, database_url: str, redis_url: str):
        self.pg_bin = os.environ.get("TEST_PG_BIN")
        self.pg_data = os.environ.get("TEST_PG_DATA")
        self.dir = os.environ.get("TEST_SERVICES_DIR")
        self.redis_port = os.environ.get("TEST_REDIS_PORT")
        self.database_url, self.redis_url = database_url, redis_url
        self.pg_port = sa.engine.make_url(database_url).port

    @property
    def available(self) -> bool:
        return all((self.pg_bin, self.pg_data, self.dir, self.redis_port))

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else list(args)

    def stop_postgres(self) -> None:
        # "fast", not "immediate": the suite's server runs with synchronous_commit=off, so a crash would lose
        # transactions the app saw committed (production keeps synchronous_commit on).
        subprocess.run(
            self._as_postgres(f"{self.pg_bin}/pg_ctl", "-D", self.pg_data, "-m", "fast", "-w", "stop"),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def postgres_running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.pg_port), timeout=0.5):
                return True
        except OSError:
            return False

    def start_postgres(self) -> None:
        if self.postgres_running():
            return
        options = (
            f"-p {self.pg_port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._as_postgres(
                f"{self.pg_bin}/pg_ctl",
                "-D",
                self.pg_data,
                "-l",
                f"{self.dir}/postgres.log",
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)

    def redis_running(self) -> bool:
        try:
            return bool(self.redis().ping())
        except redis.RedisError:
            return False

    def stop_redis(self) -> None:
        try:
            self.redis().shutdown(nosave=True)
        except redis.RedisError:
            pass  # the connection drops as the server goes away
        wait_until(lambda: not self.redis_running(), 10, message="Redis to stop")

    def start_redis(self) -> None:
        if self.redis_running():
            return
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                f"{self.dir}/redis.pid",
                "--logfile",
                f"{self.dir}/redis.log",
                "--dir",
                self.dir,
            ],
            check=True,
            timeout=30,
        )
        wait_until(self.redis_running, 10, message="Redis to start")


@pytest.fixture
def services(database_url, redis_url):
    """The suite's PostgreSQL and Redis; both are running again when the test ends, whatever happened."""
    found = Services(database_url, redis_url)
    if not found.available:
        pytest.skip("needs TEST_PG_BIN/TEST_PG_DATA/TEST_SERVICES_DIR/TEST_REDIS_PORT (run with `make test`)")
    yield found
    found.start_postgres()
    found.start_redis()


# --- gunicorn ---------------------------------------------------------------------------------------------------


class Gunicorn:
    """`gunicorn -c deploy/gunicorn.conf.py wsgi:app` on a free loopback port, configured by environment."""

    def __init__(self, tmp_path: Path, env: dict[str, str], workers: int = 2, timeout: int = 30):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        metrics_dir = tmp_path / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_TIMEOUT": str(timeout),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.log_path = tmp_path / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    def webhook_url(self, api_prefix: str = "/api/v1") -> str:
        return self.url + api_prefix + "/billing/webhooks/stripe"

    def start(self) -> Gunicorn:
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(ROOT / ".venv/bin/gunicorn"), "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up():
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                return http("GET", self.url + "/healthz", timeout=2)[0] in (200, 503)
            except OSError:
                return False

        wait_until(up, 40, 0.2, "gunicorn to answer")
        return self

    def workers(self) -> list[int]:
        """The worker processes' ids (children of the arbiter)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def quiet_logs(app):
    """Only warnings from the app while thousands of deliveries go through (formatting INFO lines costs time)."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    yield
    root.setLevel(level)


def app_environment(app, **extra: str) -> dict[str, str]:
    """The environment that makes `wsgi:app` the same app as the test's: database, Redis, emulator, SMTP sink."""
    config = app.config
    env = {
        "ENVIRONMENT": "testing",
        "DATABASE_URL": config["DATABASE_URL"],
        "REDIS_URL": config["REDIS_URL"],
        "STRIPE_API_BASE": config.get("STRIPE_API_BASE") or "",
        "STRIPE_WEBHOOK_SECRET": config["STRIPE_WEBHOOK_SECRET"],
        "SECRET_KEY": config["SECRET_KEY"],
        "JWT_SECRET_KEY": config["JWT_SECRET_KEY"],
        "ENCRYPTION_KEY": config["ENCRYPTION_KEY"],
    }
    if config.get("MAIL_SERVER"):
        env.update(MAIL_SERVER=config["MAIL_SERVER"], MAIL_PORT=str(config["MAIL_PORT"]))
    env.update(extra)
    return env


@pytest.fixture
def gunicorn(app, tmp_path):
    """A factory of gunicorn servers running the test's app; every one started is stopped at the end."""
    started: list[Gunicorn] = []

    def make(workers: int = 2, timeout: int = 30, **env: str) -> Gunicorn:
        server = Gunicorn(tmp_path / f"g{len(started)}", app_environment(app, **env), workers=workers, timeout=timeout)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


# --- a load balancer in front of several app servers ---------------------------------------------------------------


class RoundRobin:
    """A minimal HTTP load balancer on a free loopback port: each POST goes to the next backend in turn, its answer
    comes back as the backend gave it. Stands in for the proxy in front of N app hosts."""

    def __init__(self, backends: list[str]):
        turns = itertools.cycle(backends)
        lock = threading.Lock()
        self.counts = dict.fromkeys(backends, 0)
        counts = self.counts

        class Forward(BaseHTTPRequestHandler):
            def do_POST(self):
                with lock:
                    backend = next(turns)
                    counts[backend] += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                status, text, _ = http("POST", backend + self.path, body, headers, timeout=60)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
