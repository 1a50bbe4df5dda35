"""`flask doctor`: the deployment guide's production checklist, checked against this app's real dependencies.

Each check answers one line: ✓ when it holds, ✗ with what is wrong and the command or setting that fixes it.
The checks talk to the database, Stripe (through the gateway, so the emulator works too) and Redis; none of them
changes anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import redis
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app, g, has_app_context
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from app.config import GUIDE_VARIABLES, current_settings, placeholders_in
from app.extensions import db, limiter
from app.logging import redact_text
from app.models import StripeEvent, SubscriptionPlan, utcnow
from app.services import DomainError, metrics, stripe_gateway
from app.services.catalog import PLAN_CATALOG
from app.services.queue_health import (
    EVENT_AGE_ALERT_SECONDS,
    LATE_INTERVALS,
    MAIL_AGE_ALERT_SECONDS,
    ProcessesHealth,
    queue_health,
)
from app.services.stripe_admin import (
    EXTRA_EVENTS,
    default_portal_configuration,
    missing_endpoint_events,
    paid_prices,
    portal_differences,
)
from app.services.stripe_gateway import SignatureInvalid, StripeFailure, StripeKeyRefused, StripeUnreachable
from app.services.webhooks import API_VERSION, GUIDE_EVENTS, TOLERANCE_SECONDS, configured_secrets


@dataclass(frozen=True)
class Check:
    ok: bool
    title: str
    detail: str = ""
    fix: str | None = None

    def lines(self) -> list[str]:
        head = f"{'✓' if self.ok else '✗'} {self.title}" + (f" — {self.detail}" if self.detail else "")
        return [head] if self.ok or not self.fix else [head, f"    fix: {self.fix}"]


def passed(title: str, detail: str = "") -> Check:
    return Check(True, title, detail)


def failed(title: str, detail: str, fix: str) -> Check:
    return Check(False, title, detail, fix)


def stripe_failed(title: str, error: DomainError, fix: str, detail: str = "") -> Check:
    """A ✗ for a Stripe request that failed: the cause an operator can act on (never the customer's "Billing is
    temporarily unavailable"), and the fix for that cause. A refused key or an unreachable Stripe is fixed by the
    key or the network, whatever the check was about; other failures by the check's own `fix`."""
    cause = f"{detail}: {operator_cause(error)}" if detail else operator_cause(error)
    if isinstance(error, (StripeKeyRefused, StripeUnreachable)):
        return failed(title, cause, f"{error.fix}, then run `flask doctor` again")
    return failed(title, cause, fix)


def stripe_out_of_reach() -> StripeFailure | None:
    """The refused key or unreachable Stripe an earlier check of this run met (kept on `g`, the app context of one
    `flask doctor`), or None: the checks after it say "not checked" at once instead of each waiting through the
    client's retries for the same answer."""
    return g.get("doctor_stripe_out_of_reach")


def remember_stripe_failure(error: DomainError) -> None:
    """Keep a refused key or an unreachable Stripe for `stripe_out_of_reach`; any other failure is the check's own."""
    if isinstance(error, (StripeKeyRefused, StripeUnreachable)):
        g.doctor_stripe_out_of_reach = error


def operator_cause(error: DomainError) -> str:
    """A Stripe failure's cause without its fix (the fix goes on the line below)."""
    return (error.cause or error.message) if isinstance(error, StripeFailure) else error.message


# --- environment ---------------------------------------------------------------------------------------------


def unset_or_placeholder(value: Any) -> str | None:
    """Why a configured value does not count as set, or None when it does."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return "not set"
    found = placeholders_in(value)
    if found == [str(value).strip()]:
        return f"still the placeholder {found[0]}"
    if found:
        return f"still contains the placeholder{'s' if len(found) > 1 else ''} {', '.join(found)}"
    return None


def check_environment() -> Iterator[Check]:
    """Every variable of the guide is set in the app's settings, and none still has a `<…>` placeholder."""
    settings = current_settings()
    problems = []
    for name in GUIDE_VARIABLES:
        why = unset_or_placeholder(getattr(settings, name))
        if why:
            problems.append(f"{name} {why}")
    if problems:
        yield failed(
            "Environment variables",
            "; ".join(problems),
            "set each in the environment or .env (see deploy/.env.example and README → Configuration)",
        )
    else:
        yield passed("Environment variables", f"all {len(GUIDE_VARIABLES)} of the guide set, no placeholder")


def check_price_variables() -> Iterator[Check]:
    """Each STRIPE_PRICE_* setting is the price id its seeded plan stores (`flask seed-plans` copies them over)."""
    settings = current_settings()
    plans = {p.name: p for p in db.session.scalars(select(SubscriptionPlan))}
    if not plans:
        return  # "Plans seeded" already says so
    differing = []
    for spec in PLAN_CATALOG:
        plan = plans.get(spec.name)
        if plan is None:
            continue
        for name, stored in (
            (spec.monthly_env, plan.stripe_price_id_monthly),
            (spec.yearly_env, plan.stripe_price_id_yearly),
        ):
            configured = getattr(settings, name) if name else None
            if configured and configured != stored:
                differing.append(f"{name} is {configured}, the {spec.name} plan has {stored or 'none'}")
    if differing:
        yield failed("Plan price ids", "; ".join(differing), "run `flask seed-plans`")
    else:
        yield passed("Plan price ids", "the STRIPE_PRICE_* settings are the seeded plans' price ids")


# --- database ------------------------------------------------------------------------------------------------


def migrations_directory() -> str:
    return str(Path(current_app.root_path).parent / "migrations")


@contextmanager
def alembic_context_quiet() -> Iterator[None]:
    """Alembic's migration context announces its dialect at INFO ("Context impl PostgresqlImpl.", "Will assume
    transactional DDL."): worth a line while migrating, noise between two lines of the checklist (and in
    production's logs at every run) when the doctor only reads the revision."""
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_migrations() -> Iterator[Check]:
    """The database is at the migrations' head revision."""
    config = Config()
    config.set_main_option("script_location", migrations_directory())
    heads = set(ScriptDirectory.from_config(config).get_heads())
    try:
        with db.engine.connect() as connection, alembic_context_quiet():
            current = set(MigrationContext.configure(connection).get_current_heads())
    except DBAPIError as error:  # the database itself is unreachable
        cause, fix = database_problem(error)
        yield failed("Database migrations", f"cannot read the revision: {cause}", f"{fix}, then run `flask db upgrade`")
        return
    if current == heads:
        yield passed("Database migrations", f"at head {', '.join(sorted(heads))}")
    else:
        yield failed(
            "Database migrations",
            f"at {', '.join(sorted(current)) or 'nothing'}, head is {', '.join(sorted(heads))}",
            "run `flask db upgrade`",
        )


#: PostgreSQL's SQLSTATE for a table that does not exist: the migrations have not built the schema.
UNDEFINED_TABLE = "42P01"
#: What libpq puts before the reason a connection failed ("connection to server at "h", port 1 failed: ").
CONNECTION_PREFIX = re.compile(r"^(?:connection failed: )?(?:connection to server (?:at|on) .*? failed: )?")


def database_address() -> str:
    """Where DATABASE_URL points (host:port/database, or SQLite's file), never its user or password."""
    if not has_app_context():
        return "DATABASE_URL"
    try:
        url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    except (KeyError, ArgumentError):
        return "DATABASE_URL"
    if url.get_backend_name() == "sqlite":
        return f"{url.database or 'in memory'} (SQLite)"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def database_problem(error: DBAPIError) -> tuple[str, str]:
    """(what is wrong with the database, what to run or check), in a line each; never the URL's credentials."""
    lines = [" ".join(line.split()) for line in str(error.orig).splitlines() if line.strip()]
    reason = redact_text(CONNECTION_PREFIX.sub("", lines[0]) if lines else type(error.orig).__name__)
    where = database_address()
    if getattr(error.orig, "sqlstate", None) == UNDEFINED_TABLE or reason.startswith("no such table"):
        return f"The database at {where} is not migrated ({reason})", "run `flask db upgrade`"
    if error.statement is None or error.connection_invalidated:  # failed while connecting, or the connection died
        fix = (
            "check DATABASE_URL (the file's folder must exist and be writable)"
            if where.endswith("(SQLite)")
            else "check DATABASE_URL and that the database server is running and reachable from this host"
        )
        return f"Could not connect to the database at {where} ({reason})", fix
    return f"The database at {where} refused a statement ({reason})", "check the database (its log names the cause)"


# --- plans and prices ------------------------------------------------------------------------------------------


def expected_prices(plans: dict[str, SubscriptionPlan]) -> Iterator[tuple[str, str | None, int, str]]:
    """(label, price id stored on the plan, amount in cents, interval) of every price checkout may use."""
    for spec in PLAN_CATALOG:
        plan = plans.get(spec.name)
        if plan is None:
            continue
        yield (f"{plan.display_name} monthly", plan.stripe_price_id_monthly, cents(plan.price_monthly), "month")
        if plan.price_yearly is not None:
            yield (f"{plan.display_name} yearly", plan.stripe_price_id_yearly, cents(plan.price_yearly), "year")


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def money_text(amount: int, currency: str, interval: str) -> str:
    return f"{amount / 100:,.2f} {currency.upper()}/{interval}"


def check_plans_and_prices() -> Iterator[Check]:
    """Plans seeded; each of their Stripe prices exists, is active, and has the plan's amount, USD and interval."""
    plans = {p.name: p for p in db.session.scalars(select(SubscriptionPlan))}
    missing = [spec.name for spec in PLAN_CATALOG if spec.name not in plans]
    if missing:
        yield failed("Plans seeded", f"missing {', '.join(missing)}", "run `flask seed-plans`")
    else:
        yield passed("Plans seeded", ", ".join(spec.name for spec in PLAN_CATALOG))
    for label, price_id, amount, interval in expected_prices(plans):
        title = f"Stripe price {label}"
        want = money_text(amount, "usd", interval)
        if not price_id:
            yield failed(
                title,
                "no price id on the plan",
                "run `flask stripe create-catalog`, set the STRIPE_PRICE_* it prints, then `flask seed-plans`",
            )
            continue
        out_of_reach = stripe_out_of_reach()
        if out_of_reach is not None:  # the key or the network again: asking for each price would only wait longer
            yield stripe_failed(title, out_of_reach, "", detail=f"{price_id} not checked")
            continue
        try:
            price = stripe_gateway.retrieve_price(price_id)
        except DomainError as error:
            remember_stripe_failure(error)
            yield stripe_failed(
                title,
                error,
                "run `flask stripe create-catalog` with this STRIPE_SECRET_KEY's account, set the "
                "STRIPE_PRICE_* it prints, then `flask seed-plans`",
                detail=price_id,
            )
            continue
        recurring = price.get("recurring") or {}
        got = money_text(
            int(price.get("unit_amount") or 0), price.get("currency") or "?", recurring.get("interval") or "one-time"
        )
        if not price.get("active"):
            yield failed(
                title,
                f"{price_id} is archived in Stripe",
                "reactivate it in the Dashboard, or create the catalog again (`flask stripe create-catalog`)",
            )
        elif got != want:
            yield failed(
                title,
                f"{price_id} is {got} in Stripe, the plan says {want}",
                "point the STRIPE_PRICE_* variable at a price with the plan's amount and interval "
                "(`flask stripe create-catalog` prints them), then `flask seed-plans`",
            )
        else:
            yield passed(title, f"{price_id} {want}")


# --- webhook endpoint and secret -------------------------------------------------------------------------------


def webhook_url() -> str:
    config = current_app.config
    return config["APP_BASE_URL"].rstrip("/") + config["API_PREFIX"] + "/billing/webhooks/stripe"


def check_webhook_endpoint() -> Iterator[Check]:
    """A Stripe webhook endpoint at this app's URL, enabled, sending the six events in the handlers' API version."""
    url = webhook_url()
    title = "Stripe webhook endpoint"
    fix = f"run `flask stripe webhook-endpoint --url {url}` and set STRIPE_WEBHOOK_SECRET to the secret it prints"
    out_of_reach = stripe_out_of_reach()
    if out_of_reach is not None:
        yield stripe_failed(title, out_of_reach, fix, detail="not checked")
        return
    try:
        endpoints = stripe_gateway.list_webhook_endpoints()
    except DomainError as error:
        remember_stripe_failure(error)
        yield stripe_failed(title, error, fix)
        return
    mine = [e for e in endpoints if e.get("url") == url]
    if not mine:
        yield failed(title, f"none registered at {url}", fix)
        return
    endpoint = mine[0]
    lacking = [e for e in missing_endpoint_events(endpoint) if e in GUIDE_EVENTS]
    recreate = (
        f"delete the endpoint in the Stripe Dashboard → Developers → Webhooks and run `flask stripe "
        f"webhook-endpoint --url {url}`"
    )
    if endpoint.get("status") not in (None, "enabled"):
        yield failed(
            title,
            f"{endpoint['id']} at {url} is {endpoint.get('status')}",
            "enable it in the Stripe Dashboard → Developers → Webhooks",
        )
    elif lacking:
        yield failed(
            title,
            f"{endpoint['id']} does not send {', '.join(lacking)}",
            f"run `flask stripe webhook-endpoint --url {url}` (it adds them), or add them in the Stripe Dashboard → "
            "Developers → Webhooks",
        )
    elif endpoint.get("api_version") != API_VERSION:
        version = endpoint.get("api_version") or "the account's default"
        yield failed(
            title,
            f"{endpoint['id']} sends events in API version {version}, the app reads {API_VERSION} "
            "(other versions are refused with 422)",
            recreate + " (an endpoint's version cannot be changed)",
        )
    else:
        extras = [e for e in missing_endpoint_events(endpoint) if e in EXTRA_EVENTS]
        would_add = f"; would add {', '.join(extras)} (`flask stripe webhook-endpoint` says why)" if extras else ""
        yield passed(
            title, f"{endpoint['id']} at {url}, the {len(GUIDE_EVENTS)} events, API version {API_VERSION}{would_add}"
        )


def signed_header(payload: bytes, secret: str, timestamp: int) -> str:
    """A `Stripe-Signature` header made the way Stripe makes it (HMAC-SHA256 over "{t}.{body}")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def check_webhook_secret() -> Iterator[Check]:
    """The configured signing secret looks like Stripe's and our verification accepts an event signed with it."""
    title = "Webhook signing secret"
    fix = (
        f"copy the endpoint's signing secret (whsec_…) from the Stripe Dashboard into STRIPE_WEBHOOK_SECRET, or "
        f"run `flask stripe webhook-endpoint --url {webhook_url()}` on a new endpoint"
    )
    secrets = configured_secrets()
    if not secrets:
        yield failed(title, "STRIPE_WEBHOOK_SECRET is not set", fix)
        return
    odd = [s for s in secrets if not s.startswith("whsec_")]
    if odd:
        yield failed(title, "STRIPE_WEBHOOK_SECRET does not start with whsec_", fix)
        return
    # Checked with the same signature check as a delivery, not through `webhooks.verify`: that logs
    # `stripe_webhook_verified`, and the self-test must not read in the logs like a webhook that arrived.
    event = {
        "id": "evt_doctor_self_test",
        "object": "event",
        "type": "doctor.self_test",
        "created": int(time.time()),
        "data": {"object": {"id": "doctor", "object": "test"}},
    }
    payload = json.dumps(event).encode()
    for secret in secrets:
        try:
            stripe_gateway.verify_webhook_signature(
                payload, signed_header(payload, secret, int(time.time())), secret, TOLERANCE_SECONDS
            )
        except (SignatureInvalid, ValueError) as error:
            yield failed(title, f"a self-signed test event was refused: {error}", fix)
            return
    count = f"{len(secrets)} secret{'s' if len(secrets) > 1 else ''}"
    # Signed with our own secret, the test event shows the form and our check work, not that the secret is the one
    # Stripe signs with: "Webhook signatures" (next line) reads what the deliveries say.
    yield passed(
        title,
        f"whsec_ form, and a self-signed test event verifies ({count}): our check works; whether Stripe signs with "
        "it shows in Webhook signatures",
    )


#: prometheus_client's file of one process in PROMETHEUS_MULTIPROC_DIR: `counter_1234.db`, `histogram_1234.db`, …
METRIC_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def webhook_counts_here() -> tuple[tuple[int, int] | None, str]:
    """(refused, verified) webhook posts counted by this host's app server since its start, from the metric files in
    PROMETHEUS_MULTIPROC_DIR (refused posts are not stored anywhere else: only verified events get a row); or None
    and why they cannot be known. Verified means any outcome but invalid_signature, as in the alert rule."""
    directory = metrics.multiprocess_dir()
    if not directory:
        return None, (
            "this host's refused posts cannot be counted here: they are not stored (only verified events are), and "
            "PROMETHEUS_MULTIPROC_DIR, where the app server counts them, is not set in this shell"
        )
    path = Path(directory)
    if not path.is_dir() or not any(METRIC_FILE.match(p.name) for p in path.iterdir()):
        return None, f"no metric files in PROMETHEUS_MULTIPROC_DIR {directory}: this host's refused posts are unknown"
    refused = verified = 0.0
    for family in MultiProcessCollector(None, path=directory).collect():
        for sample in family.samples:
            if sample.name != "stripe_webhook_events_total":
                continue
            if sample.labels.get("outcome") == "invalid_signature":
                refused += sample.value
            else:
                verified += sample.value
    return (int(refused), int(verified)), ""


def check_webhook_signatures() -> Iterator[Check]:
    """Stripe's deliveries verify: the last verified delivery (stored events), and this host's refused posts."""
    title = "Webhook signatures"
    last = db.session.scalar(select(func.max(StripeEvent.received_at)))
    stored = (
        f"last verified delivery {last:%Y-%m-%d %H:%M:%S} UTC (stored events, any app host)"
        if last
        else "no verified delivery stored yet"
    )
    counts, unknown = webhook_counts_here()
    if counts is None:
        yield passed(title, f"{stored}; {unknown}")
        return
    refused, verified = counts
    here = f"this host since its app server started: {refused} post(s) refused (invalid signature), {verified} verified"
    if refused and not verified:
        yield failed(
            title,
            f"{here}; {stored}",
            "copy the endpoint's signing secret (whsec_…, Stripe Dashboard → Developers → Webhooks) into this host's "
            "STRIPE_WEBHOOK_SECRET (the same on every app host) and restart gunicorn; if Stripe sent this host nothing, "
            "the refused posts are someone else's (their stripe_webhook_invalid_signature lines say `missing "
            "Stripe-Signature header`)",
        )
    else:
        yield passed(title, f"{here}; {stored}")


def gunicorn_processes(root: Path) -> list[int]:
    """The pids of gunicorn processes running this project (their working directory is its root), from /proc."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if b"gunicorn" in (entry / "cmdline").read_bytes() and Path(os.readlink(entry / "cwd")) == root:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def check_metrics_directory() -> Iterator[Check]:
    """The app server's metrics are added up across its workers (PROMETHEUS_MULTIPROC_DIR)."""
    title = "Metrics directory"
    directory = metrics.multiprocess_dir()
    if not directory:
        yield passed(
            title,
            "PROMETHEUS_MULTIPROC_DIR not set in this shell: gunicorn.conf.py gives each gunicorn start a temporary "
            "one; gunicorn started without that file has none and logs metrics_multiprocess_dir_missing (with "
            "several workers /metrics then answers one worker's figures at a time)",
        )
        return
    path = Path(directory)
    fix = f"create {directory} (empty, writable by the app's user) or correct PROMETHEUS_MULTIPROC_DIR"
    if not path.is_dir():
        yield failed(title, f"PROMETHEUS_MULTIPROC_DIR {directory} does not exist", fix)
        return
    if not os.access(path, os.W_OK | os.X_OK):
        yield failed(title, f"PROMETHEUS_MULTIPROC_DIR {directory} is not writable", fix)
        return
    owners = {int(m.group(1)) for p in path.iterdir() if (m := METRIC_FILE.match(p.name))}
    servers = gunicorn_processes(Path(current_app.root_path).parent)
    if servers and not owners & set(servers):
        yield failed(
            title,
            f"gunicorn (pid {', '.join(map(str, sorted(servers)))}) runs this app here but keeps no metrics in "
            f"{directory}: it was started with another PROMETHEUS_MULTIPROC_DIR, or without one",
            "start gunicorn with the same PROMETHEUS_MULTIPROC_DIR as this shell, through gunicorn.conf.py (from the "
            "project root, or `-c deploy/gunicorn.conf.py`)",
        )
        return
    yield passed(title, f"{directory}: metric files of {len(owners)} process(es)")


# --- Customer Portal -------------------------------------------------------------------------------------------


def check_customer_portal() -> Iterator[Check]:
    """The default Customer Portal configuration has every deployment setting (`flask stripe portal-config`)."""
    title = "Customer Portal"
    fix = (
        "run `flask stripe portal-config` (or set them in the Stripe Dashboard → Settings → Billing → Customer portal)"
    )
    out_of_reach = stripe_out_of_reach()
    if out_of_reach is not None:
        yield stripe_failed(title, out_of_reach, fix, detail="not checked")
        return
    try:
        chosen = default_portal_configuration()
        products = paid_prices()
    except DomainError as error:
        remember_stripe_failure(error)
        yield stripe_failed(title, error, fix, detail="cannot read the configuration")
        return
    if chosen is None:
        yield failed(title, "no active default configuration", fix)
        return
    wrong = portal_differences(chosen, products)
    if wrong:
        yield failed(title, f"{chosen['id']}: {'; '.join(wrong)}", fix)
    else:
        yield passed(
            title,
            f"{chosen['id']}: card and billing info (name, email, address) updatable, cancel at period end, invoice "
            "history, switching between the paid prices (upgrades charged at once, downgrades at period end)",
        )


# --- Redis -----------------------------------------------------------------------------------------------------


def check_redis() -> Iterator[Check]:
    """Redis answers PING (when REDIS_URL is configured: cache, rate limits, webhook fast path)."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        return  # the environment check already says REDIS_URL is not set
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        yield failed(
            "Redis",
            f"{redact_text(url)} does not answer: {type(error).__name__}",
            "start Redis or correct REDIS_URL (redis://host:6379/0)",
        )
        return
    yield passed("Redis", f"{redact_text(url)} answers PING")


def check_task_queue() -> Iterator[Check]:
    """The task queue answers and mail is not stuck in the outbox (the worker runs, SMTP accepts)."""
    health = queue_health()
    waited = f"oldest waiting mail {health.oldest_mail_seconds:.0f} s"
    if health.configured and health.depth is None:
        yield failed("Task queue", "TASK_QUEUE_URL does not answer", "start Redis or correct TASK_QUEUE_URL")
    elif health.oldest_mail_seconds >= MAIL_AGE_ALERT_SECONDS:
        yield failed(
            "Task queue", waited, "start `flask queue worker`; its mail_send_failed log lines name the SMTP error"
        )
    elif not health.configured:
        yield passed("Task queue", f"none (TASK_QUEUE_URL unset): mail is sent after each response; {waited}")
    else:
        yield passed("Task queue", f"{health.depth} job(s) waiting, {health.failed} failed; {waited}")
    if health.processes is not None:
        yield from check_queue_processes(health.processes)


def check_queue_processes(processes: ProcessesHealth) -> Iterator[Check]:
    """Workers alive, a cron beating, each scheduled job's last success within LATE_INTERVALS of its interval."""
    workers = processes.workers_detail()
    if processes.workers_ok:
        yield passed("Task queue workers", workers)
    else:
        yield failed("Task queue workers", workers, "start `flask queue worker` (on any host, against this Redis)")
    cron = processes.cron_detail()
    if processes.cron_ok:
        yield passed("Cron", cron)
    else:
        yield failed(
            "Cron",
            cron,
            "start `flask queue cron` (one is active per deployment, a second one waits as its standby); "
            "its queue_cron_* log lines say why it stopped",
        )
    for job in processes.jobs:
        title, detail = job.title, job.detail(processes.read_at)
        if job.late(processes.read_at):
            yield failed(
                title,
                f"{detail}: more than {LATE_INTERVALS} intervals late",
                f"read the worker's log and `flask queue status` (failed jobs), or run it now: "
                f"`flask queue run {job.name}`",
            )
        else:
            yield passed(title, detail)


def check_webhook_backlog() -> Iterator[Check]:
    """No webhook event has waited to be applied (status received) as long as the alert's threshold: entitlements
    follow Stripe."""
    title = "Webhook events waiting"
    health = queue_health()
    waiting = (
        f"{health.waiting_events} recorded and not applied yet, the oldest for {health.oldest_event_seconds:.0f} s"
    )
    if health.oldest_event_seconds >= EVENT_AGE_ALERT_SECONDS:
        # A minute before the oldest was received: replaying a few applied events again changes nothing.
        since = utcnow() - timedelta(seconds=health.oldest_event_seconds + 60)
        yield failed(
            title,
            f"{waiting}: entitlements lag behind Stripe",
            "start `flask queue worker` (it applies them; `flask queue status` shows whether the queue answers), "
            f"or apply them in this shell: `flask stripe replay-events --since {since:%Y-%m-%dT%H:%M:00}`",
        )
    else:
        yield passed(title, waiting if health.waiting_events else "none: every recorded event is applied")


def check_rate_limit_storage() -> Iterator[Check]:
    """Rate limits are on and counted in Redis (shared by every worker and server, kept across restarts)."""
    title = "Rate limiting"
    fix = "set REDIS_URL: the limits are then counted in Redis (RATELIMIT_STORAGE_URI follows it)"
    if not limiter.enabled:
        yield failed(
            title,
            "disabled (RATELIMIT_ENABLED is false)",
            "remove RATELIMIT_ENABLED=false from the environment (limits are on by default), or set it to true",
        )
        return
    uri = str(current_app.config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if not uri.startswith(("redis://", "rediss://")):
        yield failed(title, f"counted in {uri.split(':', 1)[0]} storage: each worker keeps its own counts", fix)
        return
    if not limiter.storage.check():
        yield failed(title, f"{redact_text(uri)} does not answer", "start Redis or correct REDIS_URL")
        return
    yield passed(title, f"on, counted in Redis ({redact_text(uri)})")


def check_error_monitoring() -> Iterator[Check]:
    """SENTRY_DSN is set, so errors reach Sentry."""
    if current_app.config.get("SENTRY_DSN"):
        yield passed("Error monitoring", "SENTRY_DSN set: errors are sent to Sentry")
    else:
        yield failed(
            "Error monitoring",
            "SENTRY_DSN is not set",
            "set SENTRY_DSN to the project's DSN (Sentry → Settings → Client Keys), see deploy/.env.example",
        )


#: How long the mail check waits for the SMTP server (Flask-Mail's own connection has no timeout).
SMTP_CHECK_SECONDS = 5


def smtp_handshake(config: Any) -> None:
    """Connect as the app's mail does (SSL or STARTTLS, log-in when MAIL_USERNAME is set), then say goodbye."""
    port = int(config.get("MAIL_PORT") or 0)
    kind = smtplib.SMTP_SSL if config.get("MAIL_USE_SSL") else smtplib.SMTP
    with kind(config["MAIL_SERVER"], port, timeout=SMTP_CHECK_SECONDS) as host:  # QUIT on the way out
        host.ehlo()
        if config.get("MAIL_USE_TLS"):
            host.starttls()
            host.ehlo()
        if config.get("MAIL_USERNAME"):
            host.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD") or "")


def check_mail() -> Iterator[Check]:
    """MAIL_SERVER is set and answers (log-in included when MAIL_USERNAME is set), and mail comes from a real address.

    Without MAIL_SERVER the app writes every mail (links to confirm an email, reset a password; payment failures) to
    instance/mail/ and the log: fine on a laptop, and in production no customer would receive any of them."""
    config = current_app.config
    server = config.get("MAIL_SERVER")
    if not server:
        yield failed(
            "Mail",
            "MAIL_SERVER is not set: mails are written to instance/mail/ and never reach anyone",
            "set MAIL_SERVER, MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD and MAIL_USE_TLS or MAIL_USE_SSL to your SMTP "
            "service (README → Configuration)",
        )
        return
    address = f"{server}:{config.get('MAIL_PORT')}"
    try:
        smtp_handshake(config)
    except (TimeoutError, OSError, smtplib.SMTPException) as error:
        yield failed(
            "Mail",
            f"{address} did not take a connection: {type(error).__name__}: {redact_text(str(error))}",
            "check MAIL_SERVER, MAIL_PORT, MAIL_USE_TLS/MAIL_USE_SSL and the credentials, and that this host may reach it",
        )
        return
    sender = parseaddr(str(config.get("MAIL_DEFAULT_SENDER") or ""))[1]
    if not sender or sender.rpartition("@")[2] in ("", "localhost"):
        yield failed(
            "Mail",
            f"{address} answers, but mail would come from {sender or 'no address'}",
            "set MAIL_DEFAULT_SENDER to an address of your domain, such as "
            '"Smart Strategies Builder <billing@smartstockbot.app>"',
        )
        return
    yield passed("Mail", f"{address} answers; mail comes from {sender}")


def check_https_and_cors() -> Iterator[Check]:
    """APP_BASE_URL is https, and CORS allows https origins only, no wildcard."""
    base = str(current_app.config.get("APP_BASE_URL") or "")
    if base.startswith("https://"):
        yield passed("APP_BASE_URL", f"{base} (https)")
    else:
        yield failed(
            "APP_BASE_URL",
            f"{base or 'not set'} is not https",
            "set APP_BASE_URL to the public https:// address (Stripe, mails and redirects use it)",
        )
    origins = list(current_app.config.get("ALLOWED_ORIGINS") or [])
    wrong = [o for o in origins if o == "*" or not str(o).startswith("https://")]
    if not origins:
        yield failed(
            "CORS origins", "ALLOWED_ORIGINS is empty", """set ALLOWED_ORIGINS='["https://your-frontend.example"]'"""
        )
    elif wrong:
        yield failed(
            "CORS origins",
            f"not https or a wildcard: {', '.join(map(str, wrong))}",
            "list the frontend's https:// origins only in ALLOWED_ORIGINS",
        )
    else:
        yield passed("CORS origins", ", ".join(map(str, origins)))


#: How far back `check_recent_webhook_failures` looks.
RECENT_FAILURES_WINDOW = timedelta(hours=24)


def check_recent_webhook_failures() -> Iterator[Check]:
    """No webhook event recorded in the last 24 hours is still failed (from the stripe_events table)."""
    title = "Recent webhook deliveries"
    since = utcnow() - RECENT_FAILURES_WINDOW
    total, failures = db.session.execute(
        select(func.count(), func.count().filter(StripeEvent.status == "failed")).where(
            StripeEvent.received_at >= since
        )
    ).one()
    if failures:
        newest = db.session.scalars(
            select(StripeEvent.id)
            .where(StripeEvent.status == "failed", StripeEvent.received_at >= since)
            .order_by(StripeEvent.received_at.desc())
            .limit(3)
        ).all()
        yield failed(
            title,
            f"{failures} of {total} event(s) of the last 24 hours failed (e.g. {', '.join(newest)})",
            "read their error in the admin dashboard or the stripe_webhook_handling_failed log lines, fix "
            "the cause, then run `flask stripe replay-events --failed`",
        )
    else:
        yield passed(title, f"{total} event(s) in the last 24 hours, none failed")


CHECKS: tuple[Callable[[], Iterator[Check]], ...] = (
    check_environment,
    check_migrations,
    check_plans_and_prices,
    check_price_variables,
    check_webhook_endpoint,
    check_customer_portal,
    check_redis,
    check_task_queue,
    check_webhook_backlog,
    check_rate_limit_storage,
    check_metrics_directory,
    check_webhook_secret,
    check_webhook_signatures,
    check_recent_webhook_failures,
    check_error_monitoring,
    check_mail,
    check_https_and_cors,
)


def run_checks() -> Iterator[Check]:
    """Every check of the checklist, in the guide's order; a check that crashes is itself a ✗."""
    g.pop("doctor_stripe_out_of_reach", None)  # a run finds out for itself (a second run in the same app context)
    for check in CHECKS:
        title = (check.__doc__ or check.__name__).split("(")[0].strip().rstrip(".")
        try:
            yield from check()
        except DBAPIError as error:  # the database down or not migrated: one line saying so, as the CLI does
            db.session.rollback()
            cause, fix = database_problem(error)
            yield failed(title, cause, f"{fix}, then run `flask doctor` again")
        except Exception as error:  # a broken dependency must not hide the other lines
            db.session.rollback()
            yield failed(
                title,
                f"the check itself failed: {type(error).__name__}: {error}",
                "fix the error above and run `flask doctor` again",
            )
