"""The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`).

promtool comes from Debian's `prometheus` package, which `make test` installs (scripts/install-system-deps.sh).
Missing promtool fails the suite rather than skipping: untested alert rules are how pages go silent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: install Debian's `prometheus` package (make test does)"
    return subprocess.run([executable, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 17 rules found" in result.stdout


def test_alert_rules_unit_tests_pass():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_severity_and_a_unit_test():
    rules = (RULES_DIR / "alerts.yml").read_text()
    tests = (RULES_DIR / "alerts.test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(alerts) == 17
    assert rules.count("severity:") == len(alerts)
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool unit test"


def test_severities_are_the_deployment_guides():
    """Payment errors over 1% for 15 minutes page (critical), as do webhook events waiting to be applied; new Pro,
    downgrade and card update notify (info)."""
    rules = (RULES_DIR / "alerts.yml").read_text()

    def severity(alert: str) -> str:
        block = rules.split(f"- alert: {alert}\n", 1)[1].split("- alert:", 1)[0]
        return block.split("severity:", 1)[1].split()[0]

    assert severity("PaymentErrorRateHigh") == "critical"
    assert severity("StripeWebhookFailureRateHigh") == severity("DatabaseConnectionFailures") == "critical"
    # Events recorded and not applied for 5 minutes: entitlements lag behind Stripe, as when webhooks fail.
    assert severity("WebhookEventsWaiting") == "critical"
    # Invalid signatures while none verifies (a wrong STRIPE_WEBHOOK_SECRET) open a ticket: a stranger's unsigned
    # posts look the same while Stripe is quiet, and must not page anyone.
    for alert in (
        "StripeWebhookLatencyHigh",
        "StripeApiErrors",
        "SubscriptionCancellationSpike",
        "StripeWebhookSignaturesFailing",
        # The cron's heartbeat older than 5 minutes, a scheduled job more than 2 of its intervals late: a ticket.
        "TaskQueueCronHeartbeatStale",
        "ScheduledJobLate",
    ):
        assert severity(alert) == "warning", alert
    for alert in ("NewProSubscription", "SubscriptionDowngraded", "PaymentMethodUpdated"):
        assert severity(alert) == "info", alert


def test_the_critical_webhook_alert_counts_only_deliveries_stripe_signed():
    """An unsigned POST to the public endpoint is nobody's delivery: the page (critical) divides the failures of
    verified deliveries by the verified deliveries; invalid signatures have their own alert, a warning."""
    rules = (RULES_DIR / "alerts.yml").read_text()
    block = rules.split("- alert: StripeWebhookFailureRateHigh\n", 1)[1].split("- alert:", 1)[0]
    expr = block.split("expr:", 1)[1].split("for:", 1)[0]
    assert 'outcome=~"failed|api_version_mismatch"' in expr
    assert 'outcome!="invalid_signature"' in expr


def test_the_wrong_secret_alert_is_per_app_host():
    """A wrong STRIPE_WEBHOOK_SECRET on one app host of two: the other host's verified deliveries must not hide it,
    so both sides of `unless` are summed per instance (alerts.test.yml has the two-host case)."""
    rules = (RULES_DIR / "alerts.yml").read_text()
    block = rules.split("- alert: StripeWebhookSignaturesFailing\n", 1)[1].split("- alert:", 1)[0]
    expr = block.split("expr:", 1)[1].split("for:", 1)[0]
    refused, verified = expr.split("unless")
    assert "sum by (instance) (increase(" in refused and 'outcome="invalid_signature"' in refused
    assert "sum by (instance) (increase(" in verified and 'outcome!="invalid_signature"' in verified
    tests = (RULES_DIR / "alerts.test.yml").read_text()
    assert "a wrong secret on one app host of two fires for that host" in tests
