"""`make run` sends a form's mail even when the browser resets the connection once it has the redirect.

Chromium, following a form's 302, sometimes closes the socket with the body unread (8 in 100 POSTs). Without a task
queue (a fresh clone) the mail goes out when the server closes the response; `flask run`'s server read the socket
once more before closing it, that read raised on the reset and the response was never closed: the verification mail
of a sign-up stayed pending in the outbox (app/devserver.py).

The server is started as scripts/run-dev.sh starts it (its last line, the port changed to a free one), with a fresh
clone's settings (development, no Redis, no task queue, .flaskenv read) but the suite's PostgreSQL, SMTP sink and
emulator: the bug is in the server, not in the database or in how a mail is written out, and so the test needs no
`flask db upgrade` of its own (the database is migrated once per process and emptied after the test by `app`),
writes no mail into the repository's instance/mail/, and never reaches a `make run` emulator on :12111.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from app.services.mail import SUBJECTS
from tests.conftest import csrf_token_from
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parent.parent
RUN_DEV = ROOT / "scripts" / "run-dev.sh"
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_free_ports() -> tuple[int, int]:
    """Two distinct free ports, neither of them `make run`'s defaults."""
    with socket.socket() as one, socket.socket() as other:
        one.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        return one.getsockname()[1], other.getsockname()[1]


def dev_server_command(port: int) -> list[str]:
    """The command scripts/run-dev.sh ends with (the web server), on `port` (its APP_PORT)."""
    command = shlex.split(RUN_DEV.read_text().strip().splitlines()[-1])
    assert command[-2:] == ["--port", "$APP_PORT"], command
    return [*command[:-1], str(port)]


class DevServer:
    """`make run`'s web server in a process of its own, its output kept in `log`."""

    def __init__(self, port: int, env: dict[str, str], log: Path):
        self.port, self.log = port, log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                dev_server_command(port),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a reloader (FLASK_DEBUG in a local .env) is stopped with it
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.output()
                assert time.monotonic() < deadline, self.output()
                time.sleep(0.1)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


@pytest.fixture
def dev_server(app, migrated_database, smtp_sink, stripe_emulator, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",  # the banner in the log as it is printed
        "DATABASE_URL": migrated_database,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp_sink.port),
        "STRIPE_API_BASE": stripe_emulator.url,
        "TASK_QUEUE_URL": "",  # a fresh clone's: no queue, whatever a local .env says (the environment wins)
    }
    server = DevServer(free_port(), env, tmp_path / "devserver.log")
    try:
        server.wait_until_up()
        yield server
    finally:
        server.stop()


def read_response(client: socket.socket) -> bytes:
    """A whole HTTP response (status line, headers and the body its Content-Length announces)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = client.recv(65536)
        assert chunk, f"the connection closed before the headers: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = client.recv(65536)
        assert chunk, f"the connection closed before the body: {answer!r}"
        body += chunk
    return head


def sign_up_and_reset(port: int, email: str) -> bytes:
    """Sign up through the form as a browser does, and reset the connection as soon as the redirect is in (the
    whole response read, the socket closed with SO_LINGER 0); returns the response's head."""
    page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    page.request("GET", "/signup")
    response = page.getresponse()
    html = response.read().decode()
    cookies = "; ".join(cookie.split(";", 1)[0] for cookie in response.headers.get_all("Set-Cookie") or [])
    page.close()
    form = urlencode({"email": email, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf_token_from(html)})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(
            f"POST /signup HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookies}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n{form}".encode()
        )
        head = read_response(client)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    return head


def test_make_run_sends_the_mail_of_a_form_whose_connection_the_browser_reset(dev_server, smtp_sink):
    output = dev_server.output()
    assert " * Serving Flask app 'wsgi'" in output and " * Debug mode: off" in output, output  # as `flask run` said
    # Each sign-up's mail before the next one: a later request's delivery would also send a mail left pending.
    # Three, so that the old server fails even when a busy machine delays a reset past its 10 ms read.
    for attempt in range(3):
        email = f"reset{attempt}@example.com"
        head = sign_up_and_reset(dev_server.port, email)
        assert head.startswith(b"HTTP/1.1 302"), head
        assert eventually(lambda to=email: SUBJECTS["verify_email"] in smtp_sink.subjects(to=to), seconds=10), (
            f"the verification mail to {email} never came (the response was never closed):\n{dev_server.output()}"
        )
    # One line per request, the app's own: werkzeug's access line repeated it (with terminal colour codes in a file).
    output = dev_server.output()
    assert "request_completed" in output and "/signup" in output, output
    assert 'HTTP/1.1" 302' not in output and "\x1b[" not in output.split(" * Debug mode: off", 1)[1], output


def test_make_run_beside_another_starts_nothing_and_says_why(tmp_path):
    """A second `make run` while another holds the emulator's port: it registered its webhook endpoint in the other's
    emulator (replacing that app's endpoint and secret: every delivery to it then failed its signature check), and
    only then failed on the app's port. Now it stops first, with one line, having touched nothing."""
    app_port, emulator_port = two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "TASK_QUEUE"))}
    env.update(APP_PORT=str(app_port), EMULATOR_PORT=str(emulator_port))
    for name, port in (("EMULATOR_PORT", emulator_port), ("APP_PORT", app_port)):
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
        try:
            done = subprocess.run(
                [str(RUN_DEV)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(f"run-dev.sh went on beside the other {name}: {error.stdout!r} {error.stderr!r}")
        finally:
            holder.close()
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [  # the variable that moves it named, as `make run` takes it
            f"Port {port} is in use (another `make run`?): stop it, or give {name} a free port "
            f"(`make run {name}=<port>`); nothing was started."
        ], done.stderr
        assert "Webhook endpoint" not in done.stdout and "App:" not in done.stdout, done.stdout


def test_make_run_names_a_port_setting_it_cannot_read():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "TASK_QUEUE"))}
    for settings, line in (
        ({"APP_PORT": "5000x"}, "APP_PORT must be a port number from 1 to 65535, not '5000x'; nothing was started."),
        (
            {"EMULATOR_PORT": "70000"},
            "EMULATOR_PORT must be a port number from 1 to 65535, not '70000'; nothing was started.",
        ),
        (
            {"APP_PORT": "5050", "EMULATOR_PORT": "5050"},
            "APP_PORT and EMULATOR_PORT are both 5050: give them two ports; nothing was started.",
        ),
    ):
        done = subprocess.run(
            [str(RUN_DEV)], cwd=ROOT, env={**env, **settings}, capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and done.stderr.strip().splitlines() == [line], done.stderr


def test_make_run_beside_another_migrates_nothing(tmp_path):
    """`make run` migrated and seeded its database before its script found the ports taken: the check now comes
    first, so a refused start leaves no database behind (here a throw-away one named by DATABASE_URL)."""
    holders = []
    for port in (5000, 12111):
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", port))
        except OSError:
            holder.close()  # taken already (another `make run`): as refused
            continue
        holder.listen()
        holders.append(holder)
    database = tmp_path / "app.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "DATABASE_URL", "TASK_QUEUE"))}
    env["DATABASE_URL"] = f"sqlite:///{database}"
    try:
        done = subprocess.run(
            ["make", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
    finally:
        for holder in holders:
            holder.close()
    assert done.returncode != 0
    assert "is in use (another `make run`?): stop it, or give " in done.stderr, done.stderr
    assert "; nothing was started." in done.stderr, done.stderr
    assert not database.exists(), done.stdout


#: What `make run` needs of a checkout (the tests, docs and benchmarks stay behind); the virtualenv is linked.
CHECKOUT = ("app", "migrations", "scripts", "stripe_emulator", "wsgi.py", "alembic.ini", ".flaskenv", "Makefile")
CHECKOUT_FILES_KEPT_OLD = ("requirements.txt", "requirements-dev.txt")  # their times kept: `make` installs nothing


def fresh_checkout(tmp_path: Path) -> Path:
    """A copy of what `make run` runs, so that its instance/ (SQLite database, emulator state, development secrets,
    mails) is a fresh clone's and not this checkout's."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in CHECKOUT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    for name in CHECKOUT_FILES_KEPT_OLD:
        shutil.copy2(ROOT / name, checkout / name)
    (checkout / ".venv").symlink_to((ROOT / ".venv").resolve())
    return checkout


@contextlib.contextmanager
def make_run(checkout: Path, app_port: int, emulator_port: int, log: Path) -> Iterator[None]:
    """`make run APP_PORT=… EMULATOR_PORT=…` in `checkout`, with a fresh clone's environment, until /healthz answers;
    stopped (make, the script, the emulator and the server) on the way out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STRIPE_", "DATABASE_URL", "TASK_QUEUE", "REDIS_URL", "MAIL_", "APP_", "EMULATOR_"))
        and k not in ("ENVIRONMENT", "WEBHOOK_APPLY")
    }
    env["PYTHONUNBUFFERED"] = "1"
    with open(log, "w") as out:
        process = subprocess.Popen(
            # -o: the virtualenv counts as installed (it is this checkout's, linked): the test installs nothing.
            ["make", "-o", ".venv/bin/.installed", "run", f"APP_PORT={app_port}", f"EMULATOR_PORT={emulator_port}"],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # stopped together
        )
    try:

        def healthy() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{app_port}/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        assert eventually(healthy, seconds=90), log.read_text()
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # make stopped by itself (a refused start)
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


@pytest.fixture
def moved_make_run(tmp_path):
    """`make run` on two ports of its own in a fresh checkout; yields the two ports, the checkout and the log."""
    checkout = fresh_checkout(tmp_path)
    app_port, emulator_port = two_free_ports()
    log = tmp_path / "make-run.log"
    with make_run(checkout, app_port, emulator_port, log):
        yield app_port, emulator_port, checkout, log


def test_make_run_on_other_ports_builds_every_address_on_them(moved_make_run):
    """`make run APP_PORT=… EMULATOR_PORT=…` (port 5000 is macOS's AirPlay receiver): the app and the emulator
    listen there, the webhook endpoint is registered at the app's port, the mails link to it, Checkout is the
    emulator's on its port and its way back leads to the app's."""
    app_port, emulator_port, checkout, log = moved_make_run
    app, emulator = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{emulator_port}"
    output = log.read_text()
    assert f"App: {app}" in output, output
    assert f"Stripe emulator: {emulator} " in output, output
    assert f"registered → {app}/api/v1/billing/webhooks/stripe" in output, output
    assert requests.get(f"{emulator}/_emulator/health", timeout=5).status_code == 200

    browser = requests.Session()
    email = "moved@example.com"
    signup = browser.get(f"{app}/signup", timeout=10)
    form = {"email": email, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf_token_from(signup.text)}
    assert browser.post(f"{app}/signup", data=form, timeout=10).status_code == 200  # the log-in page, followed
    verify_link = re.compile(rf"{re.escape(app)}/verify-email/[^\s\"'<>]+")
    assert eventually(lambda: verify_link.search(log.read_text()) is not None, seconds=10), (
        f"no verification link to {app} in the mail:\n{log.read_text()}"
    )
    link = verify_link.search(log.read_text())
    assert link is not None
    login = browser.get(f"{app}/login", timeout=10)
    form = {"email": email, "password": PASSWORD, "csrf_token": csrf_token_from(login.text)}
    assert browser.post(f"{app}/login", data=form, timeout=10).status_code == 200
    assert browser.get(link.group(0), timeout=10).status_code == 200

    review = browser.get(f"{app}/billing/checkout", params={"plan": "pro", "cycle": "monthly"}, timeout=10)
    form = {"plan": "pro", "cycle": "monthly", "csrf_token": csrf_token_from(review.text)}
    checkout_answer = browser.post(f"{app}/billing/checkout", data=form, allow_redirects=False, timeout=30)
    assert checkout_answer.status_code == 303, checkout_answer.text
    assert checkout_answer.headers["Location"].startswith(f"{emulator}/"), checkout_answer.headers["Location"]
    hosted = browser.get(checkout_answer.headers["Location"], timeout=10)
    assert hosted.status_code == 200
    assert f'href="{app}/pricing?' in hosted.text, hosted.text  # the way back from Checkout: the app's port


def test_make_run_with_a_stripe_key_in_dot_env_starts_no_emulator(tmp_path):
    """A key in .env (which the app reads, and the script's shell does not) means Stripe, as one in the environment:
    no emulator is started, its port is not needed, and STRIPE_API_BASE does not point the app at an emulator."""
    checkout = fresh_checkout(tmp_path)
    (checkout / ".env").write_text("STRIPE_SECRET_KEY=sk_test_" + "x" * 24 + "\n")
    app_port, emulator_port = two_free_ports()
    log = tmp_path / "make-run.log"
    with socket.socket() as holder:  # the emulator's port taken: no matter, with a key
        holder.bind(("127.0.0.1", emulator_port))
        holder.listen()
        with make_run(checkout, app_port, emulator_port, log):
            output = log.read_text()
    assert f"App: http://127.0.0.1:{app_port}" in output, output
    assert "Stripe emulator:" not in output and "Webhook endpoint" not in output, output
    assert not (checkout / "instance" / "stripe_emulator.json").exists()
