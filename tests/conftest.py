"""Fixtures: the app on the real PostgreSQL and Redis that `make test` starts, a client, a runner, users.

Isolation is by truncation after each test (works across threads and processes, which the browser and
emulator tests need), not by mocking anything of ours.
"""

from __future__ import annotations

import os
import re
import threading

import pytest
import redis
import sqlalchemy as sa
from flask_migrate import upgrade
from playwright.sync_api import expect
from werkzeug.serving import make_server

from app import create_app
from app.devserver import ClosingRequestHandler, closed_once
from app.extensions import db, limiter
from app.logging import configure_root_logger, configure_structlog
from app.services import stripe_gateway
from app.services.catalog import seed_plans_from_config
from stripe_emulator.testing import EmulatorServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Browser assertions wait as long as the browser tests' actions do (`page.set_default_timeout(10_000)`), not
#: Playwright's 5 s: under `make test` two test processes, mypy and Chromium share two cores, and a form's POST, its
#: redirect and the next page may take longer than 5 s without anything being wrong.
expect.set_options(timeout=10_000)


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the suite with `make test`, which starts PostgreSQL and Redis")
    return value


def xdist_worker() -> str:
    """The pytest-xdist worker running this process ("gw0", "gw1", …), or "" when the suite runs in one process."""
    return os.environ.get("PYTEST_XDIST_WORKER", "")


def fresh_database(server_url: str, name: str, template: str | None = None) -> str:
    """A new database `name` (one per xdist worker) on the suite's PostgreSQL, empty or a copy of the database whose
    URL is `template` (PostgreSQL copies its files: no statement runs again); returns its URL."""
    if xdist_worker():
        name = f"{name}_{xdist_worker()}"
    admin = sa.create_engine(
        server_url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    copy = f" TEMPLATE {sa.engine.make_url(template).database}" if template else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}{copy}"))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name


#: The longest files, longest first (measured with `--durations=0`): started before all others so that, spread over two
#: processes, none of them is left running alone at the end. scripts/test.sh passes `--no-loadscope-reorder`, without
#: which pytest-xdist would hand out the files with the most tests first and these (one to a dozen tests) last.
LONGEST_FIRST = (
    "tests/e2e/test_billing_states.py",
    "tests/reliability/test_webhook_history.py",
    "tests/guide/test_seed_plans.py",
    "tests/test_migrations.py",
    "tests/security/test_web_fuzz.py",
    "tests/guide/test_migrate.py",
    "tests/e2e/test_screens_read_right.py",
    "tests/security/test_schemathesis.py",
    "tests/strategies/test_browser.py",
    "tests/guide/test_verify_and_debug.py",
    "tests/queue/test_two_hosts.py",
    "tests/security/test_email_change.py",
)


def pytest_collection_modifyitems(items):
    """Tests that stop the suite's PostgreSQL or Redis (the `services` fixture) are marked so that `make test` runs
    them in a process of their own, on a PostgreSQL and a Redis of their own: another test on their servers would see
    them vanish. The longest files go first, in the order of LONGEST_FIRST (a stable sort: the order within and after
    them stays as collected)."""
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker("stops_services")
    if os.environ.get("STOPS_SERVICES_FILES"):
        record_stops_services_files(items, os.environ["STOPS_SERVICES_FILES"])
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def record_stops_services_files(items, path: str) -> None:
    """The files holding `stops_services` tests, one a line, written to `path`: scripts/test.sh then runs those files
    beside the parallel run, collecting them only, not the whole suite a second time to find three tests. Each xdist
    worker collects the same items and writes the same list, each through a file of its own renamed into place."""
    files = sorted({item.nodeid.split("::")[0] for item in items if item.get_closest_marker("stops_services")})
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w") as out:
        out.writelines(f"{name}\n" for name in files)
    os.replace(partial, path)


@pytest.fixture(scope="session")
def database_url() -> str:
    """The suite's database; each xdist worker gets its own on the same server, so workers never see each other."""
    url = _required_env("TEST_DATABASE_URL")
    if not xdist_worker():
        return url
    return fresh_database(url, url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The suite's Redis; each xdist worker gets its own logical database (gw0 → 1, gw1 → 2, …)."""
    url = _required_env("TEST_REDIS_URL")
    if not xdist_worker():
        return url
    return url.rsplit("/", 1)[0] + "/" + str(int(xdist_worker().removeprefix("gw")) + 1)


def make_config(database_url: str, redis_url: str, **overrides) -> dict:
    config = {
        "ENVIRONMENT": "testing",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "RATELIMIT_LOGIN": "5 per minute",
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def migrated_database(database_url, redis_url):
    """A clean schema built by the migrations themselves, once per session."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    app = create_app(make_config(database_url, redis_url))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return database_url


@pytest.fixture(scope="session")
def stripe_emulator():
    """The bundled Stripe emulator over HTTP on a free port, for the whole session (reset after each test)."""
    # Any test key: the suite configures several against this one emulator (the doctor's, the log redaction's); the
    # emulator's own tests show that, started with a key, it refuses the others as Stripe does.
    with EmulatorServer(any_test_key=True) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def migrated_template(database_url, redis_url) -> str:
    """The URL of a database migrated once per test process by the guide's §3.1, `alembic upgrade head` typed in a
    production shell: the template of the databases of `migrated_shell` (tests/guide) and `migrated_operator_shell`
    (tests/cli). The tests whose subject comes after the migrations (seeding, the SQL that verifies it, `flask
    doctor`, the rollback, `flask users create`) start from a copy of it instead of each running the migrations
    again (a `flask`/`alembic` process's start-up and 16 revisions: ~2 s here, more on a slow machine);
    tests/guide/test_migrate.py runs the command itself and checks what it builds."""
    from tests.guide.conftest import production_shell  # (that module imports this one)

    shell = production_shell(database_url, redis_url, "ssb_migrated_template")
    shell.ok("alembic upgrade head")
    return shell.database_url


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(
                    {
                        "peer": session.peer,  # the connection's client address: one per SMTP connection
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "data": envelope.content.decode("utf8", "replace"),
                    }
                )
                return "250 OK"

        import socket

        with socket.socket() as probe:  # aiosmtpd checks itself by connecting, so it needs a real port
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def subjects(self, to: str | None = None) -> list[str]:
        import email

        found = []
        for message in self.messages:
            if to is None or to in message["to"]:
                found.append(str(email.message_from_string(message["data"])["Subject"]))
        return found

    def stop(self):
        self.controller.stop()


@pytest.fixture(scope="session")
def smtp_sink():
    sink = SmtpSink()
    yield sink
    sink.stop()


def suite_app_config(database_url: str, redis_url: str, emulator_url: str, smtp_port: int) -> dict:
    """The configuration of the `app` fixture: the suite's PostgreSQL, Redis, emulator and SMTP sink."""
    return make_config(
        database_url, redis_url, STRIPE_API_BASE=emulator_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(smtp_port)
    )


def app_structure(app) -> tuple:
    """What the setup methods of `app` have built (routes, hooks, handlers, template filters): a test that adds to
    it (`@app.get(...)` for a view that fails on purpose) leaves an app that later tests must not share."""
    hooks = (
        app.before_request_funcs,
        app.after_request_funcs,
        app.teardown_request_funcs,
        app.template_context_processors,
        app.url_value_preprocessors,
        app.url_default_functions,
    )
    return (
        tuple(app.view_functions.items()),
        tuple(rule.rule for rule in app.url_map.iter_rules()),
        tuple(tuple((k, tuple(v)) for k, v in hook.items()) for hook in hooks),
        tuple(app.teardown_appcontext_funcs),
        tuple(  # looking a handler up adds empty entries to these defaultdicts: only the handlers count
            (name, code, exc, handler)
            for name, codes in app.error_handler_spec.items()
            for code, handlers in codes.items()
            for exc, handler in handlers.items()
        ),
        tuple(app.jinja_env.filters),
        tuple(app.jinja_env.tests),
    )


class SharedApp:
    """One app per test process for the tests that take `app`, and what may change on it between two tests.

    create_app costs ~125 ms (mostly werkzeug compiling the URL rules) and every such test wants the same app, so
    it is built once. Before each test, what a test may change is put back as create_app left it: the app's
    configuration (tests set `app.config[...]`), its `app.extensions` (the services add caches there, e.g. the
    catalog snapshot or the entitlement cache's health; the gateway counts its calls), the rate limiter's state
    (kept on the one `limiter` object, so the last app built, perhaps a test's own, has its storage) and the
    process-wide logging (a test may build a production app, which logs JSON). A test that adds routes or hooks
    (`app_structure`) leaves an app that is thrown away: the next test gets a new one.
    """

    def __init__(self, config: dict):
        self.config = config
        self.app = None

    def get(self):
        """The shared app, as create_app built it (a new one after a test changed its structure)."""
        if self.app is None:
            self.app = create_app(self.config)
            self.structure = app_structure(self.app)
            self.app_config = dict(self.app.config)
            self.extensions = dict(self.app.extensions)
            self.limiter = dict(vars(limiter))
        app = self.app
        app.config.clear()
        app.config.update(self.app_config)
        app.extensions.clear()
        app.extensions.update(self.extensions)
        stripe_gateway.init_app(app)  # a new gateway: its call counter starts at zero
        vars(limiter).clear()
        vars(limiter).update(self.limiter)
        configure_structlog()  # as create_app does, the root handler writing to this test's stderr
        configure_root_logger(json=app.config["ENVIRONMENT"] == "production", level=app.config.get("LOG_LEVEL", "INFO"))
        app._got_first_request = False  # so that a test may still add a view (the app is then dropped after it)
        return app

    def after_test(self) -> None:
        """Drop the app if the test changed its structure."""
        if self.app is not None and app_structure(self.app) != self.structure:
            self.app = None


@pytest.fixture(scope="session")
def shared_app(migrated_database, redis_url, stripe_emulator, smtp_sink) -> SharedApp:
    """The one app of this test process behind the `app` fixture (see SharedApp)."""
    return SharedApp(suite_app_config(migrated_database, redis_url, stripe_emulator.url, smtp_sink.port))


@pytest.fixture
def app(request, shared_app, redis_url, stripe_emulator, smtp_sink):
    """The app on the suite's services: empty tables, an empty Redis db, a reset emulator, an empty SMTP sink.

    The tests of one process share an app object, put back as create_app built it before each test (SharedApp),
    so a test may set `app.config[...]` freely. Tests that stop PostgreSQL or Redis get an app of their own."""
    smtp_sink.messages.clear()
    if request.node.get_closest_marker("stops_services"):
        app = create_app(shared_app.config)
    else:
        app = shared_app.get()
    yield app
    stripe_emulator.clear_webhooks()
    stripe_emulator.reset()
    empty_database(app)
    redis.Redis.from_url(redis_url).flushdb()
    shared_app.after_test()


def empty_database(app) -> None:
    """Every table emptied (the per-day count tables with their sources: TRUNCATE fires no trigger), the pool closed."""
    with app.app_context():
        tables = ", ".join(t.name for t in db.metadata.sorted_tables)
        db.session.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def seeded(app):
    """The three plans of the catalog."""
    with app.app_context():
        seed_plans_from_config()
    return app


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


class Auth:
    """Signs up and logs in through the real forms, CSRF included."""

    def __init__(self, client):
        self.client = client

    def token(self, path: str = "/login") -> str:
        return csrf_token_from(self.client.get(path).get_data(as_text=True))

    def signup(self, email: str = "trader@example.com", password: str = "correct horse", confirm: str | None = None):
        """Sign up, then log in as the new account's owner does; returns the sign-up's answer."""
        response = self.client.post(
            "/signup",
            data={
                "email": email,
                "password": password,
                "confirm": password if confirm is None else confirm,
                "csrf_token": self.token("/signup"),
            },
        )
        response.close()  # as a WSGI server does once the body is sent: the verification mail goes out now
        if response.status_code == 302:  # signed up: sign-up logs nobody in (it answers alike for a known address)
            self.login(email, password)
        return response

    def login(self, email: str = "trader@example.com", password: str = "correct horse", **extra):
        return self.client.post(
            "/login", data={"email": email, "password": password, "csrf_token": self.token(), **extra}
        )

    def logout(self):
        token = csrf_token_from(self.client.get("/account").get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})


@pytest.fixture
def auth(client):
    return Auth(client)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium; never a downloaded browser."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


class LiveServer:
    """The test app served over HTTP in a thread (for the emulator's webhooks and for Chromium), as `make run` serves
    it: every response closed (`closed_once`, app/devserver.py)."""

    def __init__(self, app):
        self.app = app
        self.server = make_server(
            "127.0.0.1", 0, closed_once(app), threaded=True, request_handler=ClosingRequestHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def webhook_url(self) -> str:
        return self.url + self.app.config["API_PREFIX"] + "/billing/webhooks/stripe"

    def stop(self):
        self.server.shutdown()
        self.thread.join(timeout=5)
        self.server.server_close()


@pytest.fixture
def live_server(app):
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def webhooks_to_app(live_server, stripe_emulator):
    """The emulator delivers every event to the app's real endpoint, signed with the app's secret."""
    stripe_emulator.add_webhook(live_server.webhook_url, live_server.app.config["STRIPE_WEBHOOK_SECRET"])
    return live_server


@pytest.fixture
def confirming_app(migrated_database, redis_url, seeded, stripe_emulator, smtp_sink):
    """An app that asks for a confirmed email before Checkout (REQUIRE_VERIFIED_EMAIL, off in the suite's app),
    mailing to the SMTP sink; disposed of after the test."""
    app = create_app(
        make_config(
            migrated_database,
            redis_url,
            STRIPE_API_BASE=stripe_emulator.url,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(smtp_sink.port),
            REQUIRE_VERIFIED_EMAIL=True,
        )
    )
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
