"""Prometheus metrics: the counters and histograms the rest of the app moves, and the scrape-time gauges.

The counters are module-level objects; import and move them where the thing happens, after the commit that
makes it true (a rolled-back activation must not count):

    from app.services import metrics
    metrics.BILLING_PAYMENTS_SUCCEEDED.inc()

What a subscription change counts (activations, requested cancellations, plan changes) is counted by
`count_subscription_change`, a receiver of `signals.subscription_changed`, which is sent after the commit. Every
Stripe request is timed and counted by `stripe_gateway` (stripe_api_request_seconds, stripe_api_errors_total).

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` (set by `gunicorn.conf.py` before the app is imported) makes
prometheus-client keep each worker's values in files that `/metrics` adds up; without it (flask run, tests)
they live in the default registry. The revenue and business-rate gauges are not stored anywhere: `RevenueCollector` computes them
in SQL at each scrape, so every worker answers the same figure and the admin dashboard shows the same number.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.logging import EventWriter, get_logger
from app.models import MAIL_KINDS
from app.services import reporting
from app.services.queue_health import QueueCollector
from app.services.signals import SyncResult

log = get_logger(__name__)

# `*_created` series double the output and mean nothing to the alert rules (and multiprocess mode drops them).
disable_created_metrics()

#: Plans and the six webhook event types the endpoint is registered for (in the deployment guide's order),
#: pre-created at 0 so that `increase()` sees the first event too.
PLAN_NAMES = ("free", "starter", "pro")
WEBHOOK_EVENT_TYPES = (
    "checkout.session.completed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "customer.updated",
)
#: `outcome` of stripe_webhook_events_total. failed and api_version_mismatch count as failures of the deliveries
#: Stripe signed in the alert rules; invalid_signature (anyone can post one) only in the alert for a wrong secret.
WEBHOOK_OUTCOMES = ("processed", "ignored", "duplicate", "failed", "invalid_signature", "api_version_mismatch")
#: `direction` of billing_plan_changes_total.
PLAN_CHANGE_DIRECTIONS = ("upgrade", "downgrade", "cycle_change")

# --- Billing -------------------------------------------------------------------------------------------------
BILLING_CHECKOUT_SESSIONS_CREATED = Counter(
    "billing_checkout_sessions_created_total", "Stripe Checkout Sessions created for a paid plan."
)
BILLING_CHECKOUT_SESSIONS_COMPLETED = Counter(
    "billing_checkout_sessions_completed_total", "Checkout Sessions fulfilled (success page or webhook, once each)."
)
BILLING_SUBSCRIPTIONS_ACTIVATED = Counter(
    "billing_subscriptions_activated_total", "Subscriptions that became active (new paid plan).", ["plan"]
)
BILLING_SUBSCRIPTIONS_CANCELED = Counter(
    "billing_subscriptions_canceled_total",
    "Cancellations, counted once per subscription when requested (cancel at period end, or immediate).",
    ["plan"],
)
BILLING_PAYMENTS_SUCCEEDED = Counter("billing_payments_succeeded_total", "Invoices paid.")
BILLING_PAYMENTS_FAILED = Counter("billing_payments_failed_total", "Invoice payment attempts that failed.")
BILLING_PLAN_CHANGES = Counter("billing_plan_changes_total", "Plan changes on an existing subscription.", ["direction"])
BILLING_PAYMENT_METHOD_UPDATES = Counter(
    "billing_payment_method_updates_total", "Default payment method changes of a customer."
)

# --- Stripe webhooks -----------------------------------------------------------------------------------------
STRIPE_WEBHOOK_EVENTS = Counter(
    "stripe_webhook_events_total", "Webhook deliveries received, by event type and outcome.", ["type", "outcome"]
)
STRIPE_WEBHOOK_PROCESSING_SECONDS = Histogram(
    "stripe_webhook_processing_seconds",
    "Time from receiving a webhook to answering it.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STRIPE_WEBHOOK_IDEMPOTENCY_HITS = Counter(
    "stripe_webhook_idempotency_hits_total",
    "Webhook deliveries of an event already processed (answered 200, no effect).",
)

# --- Stripe API ----------------------------------------------------------------------------------------------
STRIPE_API_ERRORS = Counter("stripe_api_errors_total", "Calls to the Stripe API that raised an error.")
STRIPE_API_REQUEST_SECONDS = Histogram(
    "stripe_api_request_seconds",
    "Duration of calls to the Stripe API.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

# --- Infrastructure ------------------------------------------------------------------------------------------
DATABASE_ERRORS = Counter(
    "database_errors_total", "Requests that failed because the database could not be reached or errored."
)

for _plan in PLAN_NAMES:
    BILLING_SUBSCRIPTIONS_ACTIVATED.labels(plan=_plan)
    BILLING_SUBSCRIPTIONS_CANCELED.labels(plan=_plan)
for _direction in PLAN_CHANGE_DIRECTIONS:
    BILLING_PLAN_CHANGES.labels(direction=_direction)
for _type in WEBHOOK_EVENT_TYPES:
    for _outcome in WEBHOOK_OUTCOMES:
        if _outcome != "invalid_signature":  # an unverified body has no trustworthy type
            STRIPE_WEBHOOK_EVENTS.labels(type=_type, outcome=_outcome)
STRIPE_WEBHOOK_EVENTS.labels(type="unknown", outcome="invalid_signature")


@contextmanager
def stripe_api_call() -> Iterator[None]:
    """Time one Stripe API call into stripe_api_request_seconds; count it in stripe_api_errors_total if it raises."""
    started = time.perf_counter()
    try:
        yield
    except Exception:
        STRIPE_API_ERRORS.inc()
        raise
    finally:
        STRIPE_API_REQUEST_SECONDS.observe(time.perf_counter() - started)


def record_webhook(event_type: str, outcome: str, seconds: float | None = None) -> None:
    """Count one webhook delivery (`outcome` from WEBHOOK_OUTCOMES) and, when given, its processing time."""
    STRIPE_WEBHOOK_EVENTS.labels(type=event_type, outcome=outcome).inc()
    if outcome == "duplicate":
        STRIPE_WEBHOOK_IDEMPOTENCY_HITS.inc()
    if seconds is not None:
        STRIPE_WEBHOOK_PROCESSING_SECONDS.observe(seconds)


#: The transition lines `count_subscription_change` writes, once per transition a webhook applies: through
#: EventWriter (the same lines, without stdlib logging's LogRecord round trip; about half of this receiver's CPU).
transition_log = EventWriter(__name__)


def count_subscription_change(sender, change: SyncResult, **_) -> None:
    """`subscription_changed` receiver: count (and log) the activations, requested cancellations and plan changes."""
    for action, plan in zip(change.actions, change.plans, strict=False):
        if action == "subscription.activated":
            BILLING_SUBSCRIPTIONS_ACTIVATED.labels(plan=plan).inc()
            transition_log.log(logging.INFO, "subscription_activated", user_id=change.user_id, plan=plan)
        elif action == "subscription.canceled":
            transition_log.log(logging.INFO, "subscription_canceled", user_id=change.user_id, plan=plan)
        else:
            if action == "subscription.cancel_scheduled":  # the request is what the cancellation-spike alert watches
                BILLING_SUBSCRIPTIONS_CANCELED.labels(plan=plan).inc()
            transition_log.log(logging.INFO, "subscription_updated", user_id=change.user_id, plan=plan, action=action)
    for direction in change.plan_change_directions:
        BILLING_PLAN_CHANGES.labels(direction=direction).inc()


def multiprocess_dir() -> str | None:
    """The directory of the per-worker metric files, when running under gunicorn with several workers."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or None


#: The window of the churn gauge, as the admin dashboard's.
CHURN_WINDOW_DAYS = 30


def business_rates() -> list[GaugeMetricFamily]:
    """billing_conversion_rate{path} (Free→Starter, Free→Pro), billing_upgrade_rate{path="starter_pro"} and
    billing_churn_rate{window="30d"}: the admin dashboard's figures, as fractions (0.05 = 5%). A rate with no one to
    divide by (nobody signed up, nobody on Starter) is left out rather than shown as 0."""
    conversion = GaugeMetricFamily(
        "billing_conversion_rate", "Share of all users who ever moved from Free to a paid plan.", labels=["path"]
    )
    upgrade = GaugeMetricFamily(
        "billing_upgrade_rate", "Share of Starter's subscribers who ever moved up to Pro.", labels=["path"]
    )
    for item in reporting.conversions(CHURN_WINDOW_DAYS):
        if item.rate is not None:
            (upgrade if item.path == "starter_pro" else conversion).add_metric([item.path], float(item.rate))
    churn = GaugeMetricFamily(
        "billing_churn_rate", "Subscriptions ended in the window ÷ live at its start.", labels=["window"]
    )
    rate = reporting.churn(CHURN_WINDOW_DAYS).rate
    if rate is not None:
        churn.add_metric([f"{CHURN_WINDOW_DAYS}d"], float(rate))
    return [conversion, upgrade, churn]


class RevenueCollector:
    """billing_mrr_dollars, billing_arr_dollars, billing_active_subscriptions{plan,cycle} and the business rates
    (`business_rates`), from SQL at scrape."""

    def collect(self):
        try:
            summary = reporting.revenue_summary()
            rates = business_rates()
        except SQLAlchemyError:
            # The counters are still worth scraping; the missing gauges and this counter tell the story.
            db.session.rollback()
            DATABASE_ERRORS.inc()
            log.warning("metrics_revenue_query_failed", exc_info=True)
            return []
        mrr = GaugeMetricFamily(
            "billing_mrr_dollars", "Monthly recurring revenue: live subscriptions' monthly prices, yearly ones / 12."
        )
        mrr.add_metric([], float(summary.mrr))
        arr = GaugeMetricFamily("billing_arr_dollars", "Annual recurring revenue (MRR x 12).")
        arr.add_metric([], float(summary.arr))
        active = GaugeMetricFamily(
            "billing_active_subscriptions",
            "Subscriptions in active, trialing or past_due status.",
            labels=["plan", "cycle"],
        )
        for row in summary.by_plan:
            active.add_metric([row.plan, row.cycle], row.subscriptions)
        return [mrr, arr, active, *rates]


class _DefaultRegistryCollector:
    """Everything of the process's default registry (our counters, process and platform metrics)."""

    def collect(self):
        return REGISTRY.collect()


def render_metrics(include_revenue: bool = True) -> tuple[bytes, str]:
    """The exposition text of a scrape and its content type. Revenue queries need an app context."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_dir()
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_DefaultRegistryCollector())
    if include_revenue:
        registry.register(RevenueCollector())
        registry.register(QueueCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def address_allowed(remote_addr: str | None, networks: list[str]) -> bool:
    """True when `remote_addr` (the client as ProxyFix resolved it) is inside one of `networks`."""
    if not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(network) for network in networks)


def token_accepted(header: str | None, token: str | None) -> bool:
    """True for `Authorization: Bearer <METRICS_TOKEN>` when a token is configured (constant-time compare)."""
    if not token or not header:
        return False
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Scrapes are not worth a line each."""


def serve_process_metrics(host: str, port: int, networks: list[str], token: str | None) -> WSGIServer:
    """Serve this process's counters and histograms (a `flask queue worker`'s: the events it applied, the mail it
    sent, its Stripe calls) at http://host:port/metrics, in a daemon thread, for Prometheus to scrape beside the app
    hosts' /metrics (the alert rules add every target up). The app's rules apply: a client inside `networks`
    (METRICS_ALLOWED_NETWORKS) or with `Authorization: Bearer <METRICS_TOKEN>`, else 403. No revenue or queue
    gauges: the app hosts' /metrics has those. With PROMETHEUS_MULTIPROC_DIR set, every process writing there is
    summed, as on an app host."""

    def scrape(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not (
            address_allowed(environ.get("REMOTE_ADDR"), networks)
            or token_accepted(environ.get("HTTP_AUTHORIZATION"), token)
        ):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"forbidden\n"]
        body, content_type = render_metrics(include_revenue=False)
        start_response("200 OK", [("Content-Type", content_type), ("Cache-Control", "no-store")])
        return [body]

    server = make_server(host, port, scrape, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


# --- Mail ----------------------------------------------------------------------------------------------------
#: `reason` of mail_send_failures_total: the mail server said no (a 4xx/5xx reply), did not answer within
#: MAIL_TIMEOUT (or the delivery job's own time ran out mid-send), or anything else (connection refused or dropped).
MAIL_FAILURE_REASONS = ("refused", "timeout", "error")
MAIL_SENT = Counter("mail_sent_total", "Mails the mail server accepted (SMTP), by kind.", ["kind"])
MAIL_SEND_FAILURES = Counter(
    "mail_send_failures_total",
    "Mail sends that failed (the mail stays pending, tried again on its backoff, unless refused for good or given up).",
    ["kind", "reason"],
)
MAIL_GIVEN_UP = Counter(
    "mail_given_up_total",
    "Mails given up after their last attempt failed (MAIL_MAX_ATTEMPTS, about a day): status failed, never sent.",
    ["kind"],
)


def count_mail_failure(kind: str, reason: str) -> None:
    """One failed send of a `kind` mail; `reason` one of MAIL_FAILURE_REASONS (any other counts as `error`)."""
    MAIL_SEND_FAILURES.labels(kind=kind, reason=reason if reason in MAIL_FAILURE_REASONS else "error").inc()


for _kind in MAIL_KINDS:
    MAIL_SENT.labels(kind=_kind)
    MAIL_GIVEN_UP.labels(kind=_kind)
    for _reason in MAIL_FAILURE_REASONS:
        MAIL_SEND_FAILURES.labels(kind=_kind, reason=_reason)
