"""`flask stripe webhook-endpoint` on an endpoint already registered at the URL: it subscribes what is missing.

The command "subscribes the guide's six events … plus three extras" (README); an endpoint made earlier in the
Dashboard with fewer events used to get a ✓ ("already registers") while `flask doctor` said ✗ for the same endpoint.
"""

from __future__ import annotations

from app.services.stripe_admin import ENDPOINT_EVENTS, EXTRA_EVENTS
from app.services.webhooks import API_VERSION
from tests.test_stripe_cli import SIX_EVENTS

URL = "https://billing.example.com/api/v1/billing/webhooks/stripe"


def doctor_endpoint_line(app) -> str:
    result = app.test_cli_runner().invoke(args=["doctor"])
    [line] = [line for line in result.output.splitlines() if line.startswith(("✓ Stripe webhook", "✗ Stripe webhook"))]
    return line


def test_an_endpoint_lacking_events_gets_them_and_says_which(app_with, seeded, stripe_emulator):
    client = stripe_emulator.client()
    lacking = ["invoice.payment_failed", "customer.updated"]
    endpoint = client.v1.webhook_endpoints.create(
        params={
            "url": URL,
            "enabled_events": [e for e in SIX_EVENTS if e not in lacking] + ["charge.refunded"],
            "api_version": API_VERSION,
        }
    )
    app = app_with(STRIPE_API_BASE=stripe_emulator.url, APP_BASE_URL="https://billing.example.com")
    assert doctor_endpoint_line(app).startswith(f"✗ Stripe webhook endpoint — {endpoint.id} does not send ")

    result = app.test_cli_runner().invoke(args=["stripe", "webhook-endpoint", "--url", URL])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"✓ Endpoint {endpoint.id} at {URL} lacked 5 event(s), now added:"
    assert lines[1:3] == ["  added: invoice.payment_failed", "  added: customer.updated"]
    assert [line.split(" — ")[0] for line in lines[3:6]] == [f"  extra: {e}" for e in EXTRA_EVENTS]
    assert "STRIPE_WEBHOOK_SECRET=" not in result.output  # an existing endpoint's secret is not in any answer

    after = client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert set(after.enabled_events) == set(ENDPOINT_EVENTS) | {"charge.refunded"}  # its own event kept
    assert doctor_endpoint_line(app).startswith(f"✓ Stripe webhook endpoint — {endpoint.id} at {URL}, the 6 events")

    again = app.test_cli_runner().invoke(args=["stripe", "webhook-endpoint", "--url", URL])
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[0] == (
        f"✓ Endpoint {endpoint.id} already registers {URL} with every event, API version {API_VERSION}"
    )


def test_an_endpoint_of_another_api_version_is_refused_with_what_to_do(app_with, seeded, stripe_emulator):
    """Its version cannot be changed: no ✓, exit 1, and the endpoint is left as it was."""
    client = stripe_emulator.client()
    endpoint = client.v1.webhook_endpoints.create(params={"url": URL, "enabled_events": ["customer.updated"]})
    app = app_with(STRIPE_API_BASE=stripe_emulator.url)
    result = app.test_cli_runner().invoke(args=["stripe", "webhook-endpoint", "--url", URL])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: Endpoint {endpoint.id} at {URL} sends events in API version the account default, the app reads "
        f"{API_VERSION} (an endpoint's version cannot be changed): delete it in the Stripe Dashboard → Developers → "
        "Webhooks and run this command again"
    )
    assert client.v1.webhook_endpoints.retrieve(endpoint.id).enabled_events == ["customer.updated"]


def test_a_disabled_endpoint_is_refused_with_what_to_do(app_with, seeded, stripe_emulator):
    client = stripe_emulator.client()
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": URL, "enabled_events": SIX_EVENTS, "api_version": API_VERSION}
    )
    client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    app = app_with(STRIPE_API_BASE=stripe_emulator.url)
    result = app.test_cli_runner().invoke(args=["stripe", "webhook-endpoint", "--url", URL])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: Endpoint {endpoint.id} at {URL} is disabled: enable it in the Stripe Dashboard → Developers → "
        "Webhooks (or delete it and run this command again)"
    )
