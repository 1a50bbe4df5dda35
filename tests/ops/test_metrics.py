"""`/metrics`: the counters of the issue, access control, and revenue gauges computed in SQL."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.extensions import db
from app.models import SubscriptionPlan, User, UserSubscription, utcnow
from app.services import metrics
from app.services.reporting import churn, conversions, revenue_summary

ISSUE_COUNTERS = (
    "billing_checkout_sessions_created_total",
    "billing_checkout_sessions_completed_total",
    "billing_subscriptions_activated_total",
    "billing_subscriptions_canceled_total",
    "billing_payments_succeeded_total",
    "billing_payments_failed_total",
    "stripe_webhook_events_total",
    "stripe_webhook_idempotency_hits_total",
    "stripe_api_errors_total",
    "database_errors_total",
    "billing_plan_changes_total",
    "billing_payment_method_updates_total",
)
ISSUE_HISTOGRAMS = ("stripe_webhook_processing_seconds", "stripe_api_request_seconds")
PUBLIC = {"REMOTE_ADDR": "203.0.113.9"}


def scrape(client, **kwargs) -> dict[str, float]:
    """`{'name{label="v"}': value}` of one scrape, parsed with prometheus-client's own parser."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.status_code
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_every_counter_and_histogram_of_the_issue_is_exposed(client, seeded):
    text = client.get("/metrics").get_data(as_text=True)
    for name in ISSUE_COUNTERS:
        assert f"# TYPE {name.removesuffix('_total')} counter" in text or f"# TYPE {name} counter" in text, name
    for name in ISSUE_HISTOGRAMS:
        assert f"# TYPE {name} histogram" in text, name
    for name in ("billing_mrr_dollars", "billing_arr_dollars", "billing_active_subscriptions"):
        assert f"# TYPE {name} gauge" in text, name
    assert not re.search(r"^[a-z_]+_created[ {]", text, re.M), "*_created series are disabled"


def test_counters_move_when_the_app_moves_them(client, seeded):
    before = scrape(client)
    metrics.BILLING_CHECKOUT_SESSIONS_CREATED.inc()
    metrics.BILLING_SUBSCRIPTIONS_ACTIVATED.labels(plan="pro").inc()
    metrics.record_webhook("invoice.payment_failed", "failed", seconds=0.2)
    metrics.record_webhook("invoice.payment_failed", "duplicate")
    with pytest.raises(RuntimeError), metrics.stripe_api_call():
        raise RuntimeError("Stripe is down")
    after = scrape(client)

    def moved(key):
        return after[key] - before.get(key, 0)

    assert moved("billing_checkout_sessions_created_total") == 1
    assert moved('billing_subscriptions_activated_total{plan="pro"}') == 1
    assert moved('stripe_webhook_events_total{outcome="failed",type="invoice.payment_failed"}') == 1
    assert moved('stripe_webhook_events_total{outcome="duplicate",type="invoice.payment_failed"}') == 1
    assert moved("stripe_webhook_idempotency_hits_total") == 1
    assert moved("stripe_webhook_processing_seconds_count") == 1
    assert moved("stripe_api_errors_total") == 1
    assert moved("stripe_api_request_seconds_count") == 1


def test_labelled_counters_start_at_zero_so_the_first_event_shows_in_increase(client, seeded):
    samples = scrape(client)
    for plan in ("free", "starter", "pro"):
        assert f'billing_subscriptions_activated_total{{plan="{plan}"}}' in samples
    assert 'billing_plan_changes_total{direction="downgrade"}' in samples
    assert 'stripe_webhook_events_total{outcome="processed",type="checkout.session.completed"}' in samples


def test_a_public_address_is_refused(client, seeded):
    response = client.get("/metrics", environ_overrides=PUBLIC)
    assert response.status_code == 403
    assert "billing_" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.2.3.4", "172.20.0.5", "192.168.1.10", "::1", "fd00::5", "::ffff:10.0.0.7"]
)
def test_loopback_and_private_addresses_are_allowed(client, seeded, address):
    assert client.get("/metrics", environ_overrides={"REMOTE_ADDR": address}).status_code == 200


@pytest.mark.parametrize("address", ["172.32.0.1", "8.8.8.8", "2001:db8::1", "not-an-ip"])
def test_addresses_outside_the_ranges_are_refused(client, seeded, address):
    assert client.get("/metrics", environ_overrides={"REMOTE_ADDR": address}).status_code == 403


def test_the_bearer_token_opens_metrics_from_anywhere(app, seeded):
    app.config["METRICS_TOKEN"] = "t" * 32
    client = app.test_client()
    assert (
        client.get("/metrics", environ_overrides=PUBLIC, headers={"Authorization": "Bearer " + "t" * 32}).status_code
        == 200
    )
    assert (
        client.get("/metrics", environ_overrides=PUBLIC, headers={"Authorization": "Bearer wrong"}).status_code == 403
    )
    assert client.get("/metrics", environ_overrides=PUBLIC, headers={"Authorization": "t" * 32}).status_code == 403


def test_no_token_configured_means_no_token_accepted(app, seeded):
    assert app.config["METRICS_TOKEN"] is None
    response = app.test_client().get("/metrics", environ_overrides=PUBLIC, headers={"Authorization": "Bearer "})
    assert response.status_code == 403


def test_the_allow_list_comes_from_config(migrated_database, redis_url):
    from app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(migrated_database, redis_url, METRICS_ALLOWED_NETWORKS="203.0.113.0/24"))
    assert app.config["METRICS_ALLOWED_NETWORKS"] == ["203.0.113.0/24"]
    client = app.test_client()
    assert client.get("/metrics", environ_overrides=PUBLIC).status_code == 200
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed


def test_a_bad_network_is_a_configuration_problem(migrated_database, redis_url):
    from app import create_app
    from app.config import ConfigurationError
    from tests.conftest import make_config

    with pytest.raises(ConfigurationError) as excinfo:
        create_app(make_config(migrated_database, redis_url, METRICS_ALLOWED_NETWORKS="10.0.0.0/8, intranet"))
    assert "METRICS_ALLOWED_NETWORKS has 'intranet'" in str(excinfo.value)


def add_subscription(user_email: str, plan_name: str, cycle: str, status: str = "active") -> None:
    user = User(email=user_email)
    user.set_password("correct horse")
    db.session.add(user)
    db.session.flush()
    plan = db.session.scalar(select(SubscriptionPlan).where(SubscriptionPlan.name == plan_name))
    db.session.add(
        UserSubscription(
            user_id=user.id,
            plan_id=plan.id,
            billing_cycle=cycle,
            status=status,
            stripe_subscription_id=f"sub_{user_email.split('@')[0]}",
            stripe_price_id=plan.stripe_price_id_for(cycle),
        )
    )
    db.session.commit()


def test_mrr_and_arr_gauges_equal_the_sum_of_the_subscriptions(app, client, seeded):
    with app.app_context():
        add_subscription("a@example.com", "starter", "monthly")
        add_subscription("b@example.com", "starter", "monthly", status="past_due")  # still billed
        add_subscription("c@example.com", "pro", "yearly", status="trialing")
        add_subscription("d@example.com", "pro", "monthly", status="canceled")  # not revenue
        add_subscription("e@example.com", "starter", "yearly", status="incomplete")  # not yet revenue
        summary = revenue_summary()

    expected_mrr = Decimal("19.99") * 2 + Decimal("479.99") / 12
    assert summary.mrr == expected_mrr
    assert summary.arr == Decimal("19.99") * 24 + Decimal("479.99") == Decimal("959.75")
    assert summary.active_subscriptions == 3
    assert [(r.plan, r.cycle, r.subscriptions, r.billed_per_cycle) for r in summary.by_plan] == [
        ("starter", "monthly", 2, Decimal("39.98")),
        ("pro", "yearly", 1, Decimal("479.99")),
    ]

    samples = scrape(client)
    assert samples["billing_mrr_dollars"] == pytest.approx(float(expected_mrr))
    assert samples["billing_mrr_dollars"] == pytest.approx(79.979166666)
    assert samples["billing_arr_dollars"] == pytest.approx(959.75)
    assert samples['billing_active_subscriptions{cycle="monthly",plan="starter"}'] == 2
    assert samples['billing_active_subscriptions{cycle="yearly",plan="pro"}'] == 1
    assert not any(
        key.startswith("billing_active_subscriptions") and 'plan="pro"' in key and "monthly" in key for key in samples
    )


def test_no_subscriptions_means_zero_revenue(app, client, seeded):
    samples = scrape(client)
    assert samples["billing_mrr_dollars"] == 0
    assert samples["billing_arr_dollars"] == 0


def test_a_database_outage_still_serves_the_counters(app, client, seeded, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def unreachable():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("app.services.reporting.revenue_summary", unreachable)
    before = scrape(client)["database_errors_total"]
    text = client.get("/metrics").get_data(as_text=True)
    assert "billing_checkout_sessions_created_total" in text
    assert "billing_mrr_dollars" not in text
    assert scrape(client)["database_errors_total"] >= before + 1


def test_metrics_are_not_rate_limited_nor_redirected(client, seeded):
    for _ in range(30):
        assert client.get("/metrics").status_code == 200


def test_metric_names_in_the_alert_rules_exist(client, seeded):
    """A renamed counter must not silently turn an alert into one that can never fire."""
    from pathlib import Path

    rules = (Path(__file__).resolve().parents[2] / "deploy/prometheus/alerts.yml").read_text()
    expressions = "\n".join(re.findall(r"expr: \|?\n?((?:.*\n)*?)\s+(?:for|labels):", rules))
    used = {
        name.removesuffix("_bucket") for name in re.findall(r"\b((?:billing|stripe|database)_[a-z_]+)\b", expressions)
    }
    exposed = {key.split("{")[0].removesuffix("_bucket") for key in scrape(client)}
    missing = {name for name in used if name not in exposed}
    assert len(used) >= 10 and not missing, missing


def test_conversion_upgrade_and_churn_rates_are_gauges_equal_to_the_dashboards(app, client, seeded):
    with app.app_context():
        add_subscription("kept@example.com", "starter", "monthly")
        add_subscription("gone@example.com", "pro", "monthly", status="canceled")
        long_ago, lately = utcnow() - timedelta(days=60), utcnow() - timedelta(days=5)
        for row in db.session.scalars(select(UserSubscription)):
            row.created_at = long_ago
            if row.status == "canceled":
                row.ended_at = lately
        db.session.commit()
        rates = {c.path: c.rate for c in conversions(30)}
        churn_rate = churn(30).rate
    assert churn_rate == Decimal("0.5")  # one of the two live 30 days ago has ended

    samples = scrape(client)
    assert samples['billing_churn_rate{window="30d"}'] == pytest.approx(0.5)
    assert samples['billing_conversion_rate{path="free_starter"}'] == pytest.approx(float(rates["free_starter"]))
    assert samples['billing_conversion_rate{path="free_pro"}'] == pytest.approx(float(rates["free_pro"]))
    if rates["starter_pro"] is None:  # nobody has been on Starter through the app's own flow: no base to divide by
        assert not any(key.startswith("billing_upgrade_rate") for key in samples)
    else:
        assert samples['billing_upgrade_rate{path="starter_pro"}'] == pytest.approx(float(rates["starter_pro"]))
    text = client.get("/metrics").get_data(as_text=True)
    for name in ("billing_conversion_rate", "billing_upgrade_rate", "billing_churn_rate"):
        assert f"# TYPE {name} gauge" in text, name
