"""`flask queue worker --metrics-port`: a worker's own counters for Prometheus.

In queue mode the events are applied in the workers, so what they count (events applied, their processing time,
payments, Stripe calls) never passes through an app host's /metrics; a worker serves it itself, under the same
rules as /metrics (METRICS_ALLOWED_NETWORKS or METRICS_TOKEN). A real worker process applies a real event here.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from tests.queue.test_worker import free_port, start_worker, wait_for
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import events_in_db, secret
from tests.webhooks.test_queue_mode import docs_user, plan_of, queue_mode
from tests.webhooks.test_stripe_docs_events import load


def scrape(port: int, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def stop(process) -> str:
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:
        process.kill()
    return process.stderr.read().decode(errors="replace") if process.stderr else ""


def test_a_worker_serves_the_counts_of_the_events_it_applied(app, client, migrated_database, redis_url, smtp_sink):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    port = free_port()
    worker = start_worker(
        migrated_database,
        redis_url,
        smtp_sink.port,
        "worker",
        "--metrics-port",
        str(port),
        STRIPE_PRICE_PRO_MONTHLY=app.config["STRIPE_PRICE_PRO_MONTHLY"],
        STRIPE_WEBHOOK_SECRET=app.config["STRIPE_WEBHOOK_SECRET"],
    )
    try:
        assert wait_for(lambda: events_in_db(app) == {created["id"]: ("processed", 1)}, 30)
        assert plan_of(app, user_id) == ("active", "pro")
        # The worker counts an event once its transaction has committed, just after the row says so.
        counted = 'stripe_webhook_events_total{outcome="processed",type="customer.subscription.created"} 1.0'
        assert wait_for(lambda: counted in scrape(port)[1].splitlines(), 10), scrape(port)[1][:2000]
        status, body = scrape(port)
        assert status == 200
        lines = body.splitlines()
        assert 'stripe_webhook_events_total{outcome="processed",type="customer.subscription.created"} 1.0' in lines, (
            body[:2000]
        )
        assert any(
            line.startswith("stripe_webhook_processing_seconds_count") and line.endswith(" 1.0") for line in lines
        )
        assert 'billing_subscriptions_activated_total{plan="pro"} 1.0' in lines
        assert not any(line.startswith("billing_mrr_dollars") for line in lines)  # the app hosts serve the gauges
    finally:
        errors = stop(worker)
    assert "Traceback" not in errors, errors


@pytest.mark.parametrize("token", [None, "s3cret-scrape-token"])
def test_a_worker_s_metrics_follow_the_app_s_access_rules(migrated_database, redis_url, smtp_sink, token):
    """Loopback is outside METRICS_ALLOWED_NETWORKS here: 403 without the token, 200 with it."""
    port = free_port()
    settings = {"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}
    if token:
        settings["METRICS_TOKEN"] = token
    worker = start_worker(
        migrated_database, redis_url, smtp_sink.port, "worker", "--metrics-port", str(port), **settings
    )
    try:
        assert wait_for(lambda: scrape(port)[0] != 0, 20), "the worker's metrics never answered"
        assert scrape(port)[0] == 403
        assert scrape(port, "wrong")[0] == 403
        if token:
            status, body = scrape(port, token)
            assert status == 200 and "stripe_webhook_events_total" in body
    finally:
        stop(worker)


def test_a_port_in_use_stops_the_worker_with_one_line(migrated_database, redis_url, smtp_sink):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker(migrated_database, redis_url, smtp_sink.port, "worker", "--metrics-port", str(port))
        worker.wait(timeout=30)
        errors = worker.stderr.read().decode()
    assert worker.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in errors
    assert "Traceback" not in errors
