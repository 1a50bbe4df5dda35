"""`flask doctor` against the real PostgreSQL, Redis and the Stripe emulator: a healthy and a broken configuration."""

from __future__ import annotations

import socket

import pytest
import sentry_sdk
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.services.webhooks import API_VERSION
from tests.conftest import make_config
from tests.test_stripe_cli import SIX_EVENTS, misconfigure_portal

BASE_URL = "https://billing.example.com"
WEBHOOK_URL = BASE_URL + "/api/v1/billing/webhooks/stripe"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def doctor(database_url: str, redis_url: str, emulator_url: str, **overrides) -> tuple[int, list[str]]:
    """Run `flask doctor` in an app configured like production would be, pointed at the emulator."""
    config = make_config(
        database_url,
        redis_url,
        STRIPE_API_BASE=emulator_url,
        STRIPE_SECRET_KEY="sk_test_doctor0123456789",
        STRIPE_PUBLISHABLE_KEY="pk_test_doctor0123",
        ALLOWED_ORIGINS=f'["{BASE_URL}"]',
        APP_BASE_URL=BASE_URL,
        SENTRY_DSN="https://public@sentry.example.com/1",
    )
    config.update(overrides)
    app = create_app(config)
    try:
        result = app.test_cli_runner().invoke(args=["doctor"])
    finally:
        sentry_sdk.init(dsn=None)  # later tests run without Sentry
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return result.exit_code, result.output.splitlines()


def mail_settings(port: int, sender: str = "Smart Strategies Builder <billing@example.com>") -> dict[str, str]:
    return {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(port), "MAIL_DEFAULT_SENDER": sender}


@pytest.fixture
def registered_secret(seeded, runner):
    """The guide's set-up through our own commands: plans seeded, endpoint registered at the app's URL."""
    result = runner.invoke(args=["stripe", "webhook-endpoint", "--url", WEBHOOK_URL])
    assert result.exit_code == 0, result.output
    return next(
        line.split("=", 1)[1] for line in result.output.splitlines() if line.startswith("STRIPE_WEBHOOK_SECRET=")
    )


def test_a_healthy_configuration_passes_every_check(
    registered_secret, migrated_database, redis_url, stripe_emulator, smtp_sink
):
    status, lines = doctor(
        migrated_database,
        redis_url,
        stripe_emulator.url,
        STRIPE_WEBHOOK_SECRET=registered_secret,
        **mail_settings(smtp_sink.port),
    )
    checks = [line for line in lines if line.startswith(("✓", "✗"))]
    assert status == 0, "\n".join(lines)
    assert all(line.startswith("✓") for line in checks), "\n".join(lines)
    # The guide's §2.1 lists 20 variables; APP_BASE_URL, required beyond them, has its own line below.
    assert checks[0] == "✓ Environment variables — all 20 of the guide set, no placeholder"
    titles = [line[2:].split(" — ")[0] for line in checks]
    assert titles == [
        "Environment variables",
        "Database migrations",
        "Plans seeded",
        "Stripe price Free monthly",
        "Stripe price Starter monthly",
        "Stripe price Starter yearly",
        "Stripe price Pro monthly",
        "Stripe price Pro yearly",
        "Plan price ids",
        "Stripe webhook endpoint",
        "Customer Portal",
        "Redis",
        "Task queue",
        "Webhook events waiting",
        "Rate limiting",
        "Metrics directory",
        "Webhook signing secret",
        "Webhook signatures",
        "Recent webhook deliveries",
        "Error monitoring",
        "Mail",
        "APP_BASE_URL",
        "CORS origins",
    ]
    assert f"✓ Mail — 127.0.0.1:{smtp_sink.port} answers; mail comes from billing@example.com" in lines
    assert f"at {WEBHOOK_URL}, the 6 events, API version {API_VERSION}" in "\n".join(lines)
    assert lines[-1] == "All checks passed: ready for production."


def test_a_broken_configuration_names_each_problem_and_its_fix(seeded, migrated_database, stripe_emulator):
    with seeded.app_context():
        db.session.execute(sa.text("DELETE FROM subscription_plans WHERE name = 'starter'"))
        db.session.execute(sa.text("UPDATE subscription_plans SET price_monthly = 59.99 WHERE name = 'pro'"))
        db.session.commit()
    status, lines = doctor(
        migrated_database,
        f"redis://127.0.0.1:{closed_port()}/0",
        stripe_emulator.url,
        STRIPE_PUBLISHABLE_KEY="<pk_live_your_publishable_key>",
        STRIPE_WEBHOOK_SECRET="whsec_doctor_not_registered",
    )
    text = "\n".join(lines)
    assert status == 1, text

    def failure(title: str) -> tuple[str, str]:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"✗ {title}"))
        assert lines[index + 1].startswith("    fix: "), text
        return lines[index], lines[index + 1]

    line, fix = failure("Environment variables")
    assert "STRIPE_PUBLISHABLE_KEY still the placeholder <pk_live_your_publishable_key>" in line
    line, fix = failure("Plans seeded")
    assert "missing starter" in line and "flask seed-plans" in fix
    line, fix = failure("Stripe price Pro monthly")
    assert "price_pro_monthly is 49.99 USD/month in Stripe, the plan says 59.99 USD/month" in line
    assert "STRIPE_PRICE_*" in fix
    line, fix = failure("Stripe webhook endpoint")
    assert f"none registered at {WEBHOOK_URL}" in line
    assert f"flask stripe webhook-endpoint --url {WEBHOOK_URL}" in fix
    line, fix = failure("Redis")
    assert "does not answer" in line and "REDIS_URL" in fix
    line, fix = failure("Rate limiting")
    assert "does not answer" in line and "REDIS_URL" in fix
    line, fix = failure("Customer Portal")  # it offers Starter's prices, and no Starter plan is seeded
    assert "plan switching offers other prices than the paid plans'" in line and "flask stripe portal-config" in fix
    # What still holds is still ✓.
    for title in ("Database migrations", "Stripe price Pro yearly", "Webhook signing secret"):
        assert any(line.startswith(f"✓ {title}") for line in lines), title
    assert lines[-1] == "8 check(s) failed."  # with mail: no MAIL_SERVER


def test_the_portal_check_reads_the_configuration_from_stripe(seeded, stripe_emulator):
    """The emulator's default configuration is what the check sees (GET /v1/billing_portal/configurations)."""
    configurations = stripe_emulator.client().v1.billing_portal.configurations.list()
    [default] = configurations.data
    assert default.active and default.is_default
    assert default.features.subscription_cancel.enabled and default.features.subscription_cancel.mode == "at_period_end"


def test_price_variables_that_differ_from_the_seeded_plans_name_the_seed_command(
    seeded, migrated_database, redis_url, stripe_emulator
):
    """A STRIPE_PRICE_* changed after `flask seed-plans` is a ✗ until the plans are seeded again."""
    changed = {"STRIPE_PRICE_PRO_MONTHLY": "price_pro_monthly_2027"}
    status, lines = doctor(migrated_database, redis_url, stripe_emulator.url, **changed)
    index = next(i for i, line in enumerate(lines) if line.startswith("✗ Plan price ids"))
    assert status == 1
    assert "STRIPE_PRICE_PRO_MONTHLY is price_pro_monthly_2027, the pro plan has price_pro_monthly" in lines[index]
    assert "STRIPE_PRICE_PRO_YEARLY" not in lines[index]
    assert lines[index + 1] == "    fix: run `flask seed-plans`"

    app = create_app(make_config(migrated_database, redis_url, STRIPE_API_BASE=stripe_emulator.url, **changed))
    try:
        assert app.test_cli_runner().invoke(args=["seed-plans"]).exit_code == 0
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    status, lines = doctor(migrated_database, redis_url, stripe_emulator.url, **changed)
    assert any(line.startswith("✓ Plan price ids") for line in lines), "\n".join(lines)


def test_an_endpoint_with_exactly_the_six_events_passes_and_names_the_extras(
    seeded, migrated_database, redis_url, stripe_emulator, smtp_sink
):
    endpoint = stripe_emulator.client().v1.webhook_endpoints.create(
        params={"url": WEBHOOK_URL, "enabled_events": SIX_EVENTS, "api_version": API_VERSION}
    )
    status, lines = doctor(
        migrated_database,
        redis_url,
        stripe_emulator.url,
        STRIPE_WEBHOOK_SECRET=endpoint.secret,
        **mail_settings(smtp_sink.port),
    )
    [line] = [line for line in lines if "Stripe webhook endpoint" in line]
    assert line.startswith("✓"), "\n".join(lines)
    assert (
        "would add customer.subscription.created, checkout.session.async_payment_succeeded, "
        "checkout.session.async_payment_failed (`flask stripe webhook-endpoint` says why)"
    ) in line
    assert status == 0, "\n".join(lines)


@pytest.mark.parametrize(
    ("api_version", "named"), [("2025-03-31.basil", "2025-03-31.basil"), (None, "the account's default")]
)
def test_an_endpoint_of_another_api_version_fails_and_says_to_recreate_it(
    seeded, migrated_database, redis_url, stripe_emulator, api_version, named
):
    endpoint = stripe_emulator.client().v1.webhook_endpoints.create(
        params={"url": WEBHOOK_URL, "enabled_events": SIX_EVENTS}
    )
    assert endpoint.api_version is None  # as Stripe answers when no version is asked for
    if api_version:  # an endpoint made in the Dashboard with an older version (the emulator renders only its own)
        store = stripe_emulator.emulator.store
        with store.lock:
            store.must("webhook_endpoints", endpoint.id)["api_version"] = api_version
    status, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET=endpoint.secret)
    [line] = [line for line in lines if "Stripe webhook endpoint" in line]
    assert line.startswith("✗"), "\n".join(lines)
    assert f"sends events in API version {named}, the app reads {API_VERSION}" in line
    assert "an endpoint's version cannot be changed" in "\n".join(lines)
    assert status != 0


def test_the_portal_check_names_every_setting_that_differs(
    seeded, runner, migrated_database, redis_url, stripe_emulator
):
    default_id = misconfigure_portal(stripe_emulator)
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url)
    index = next(i for i, line in enumerate(lines) if line.startswith("✗ Customer Portal"))
    assert lines[index] == (
        f"✗ Customer Portal — {default_id}: payment methods are not updatable; billing info updates "
        "allow email only, not name, email and address; cancellation is immediately, not at "
        "period end; invoice history is hidden; plan switching offers other prices than the paid "
        "plans'"
    )
    assert (
        lines[index + 1] == "    fix: run `flask stripe portal-config` (or set them in the Stripe Dashboard → "
        "Settings → Billing → Customer portal)"
    )
    assert runner.invoke(args=["stripe", "portal-config"]).exit_code == 0
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url)
    assert any(line.startswith(f"✓ Customer Portal — {default_id}") for line in lines), "\n".join(lines)


def test_the_portal_check_names_downgrades_that_take_effect_at_once(
    seeded, runner, migrated_database, redis_url, stripe_emulator
):
    assert runner.invoke(args=["stripe", "portal-config"]).exit_code == 0
    client = stripe_emulator.client()
    [default] = client.v1.billing_portal.configurations.list().data
    client.v1.billing_portal.configurations.update(  # a cheaper plan now, only a shorter interval at the period end
        default.id,
        params={
            "features": {
                "subscription_update": {"schedule_at_period_end": {"conditions": [{"type": "shortening_interval"}]}}
            }
        },
    )
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url)
    assert f"✗ Customer Portal — {default.id}: downgrades take effect at once, not at the period end" in lines


def test_the_portal_check_names_upgrades_left_for_the_next_invoice(
    seeded, runner, migrated_database, redis_url, stripe_emulator
):
    """Stripe's default `create_prorations` leaves an upgrade's difference for the next invoice (a customer who then
    cancels never pays it): a ✗ until `flask stripe portal-config` sets `always_invoice` again."""
    assert runner.invoke(args=["stripe", "portal-config"]).exit_code == 0
    client = stripe_emulator.client()
    [default] = client.v1.billing_portal.configurations.list().data
    client.v1.billing_portal.configurations.update(
        default.id, params={"features": {"subscription_update": {"proration_behavior": "create_prorations"}}}
    )
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url)
    assert (
        f"✗ Customer Portal — {default.id}: an upgrade is not charged at once "
        "(proration create_prorations, not always_invoice)" in lines
    ), "\n".join(lines)
    assert runner.invoke(args=["stripe", "portal-config"]).exit_code == 0
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url)
    assert any(line.startswith(f"✓ Customer Portal — {default.id}") for line in lines), "\n".join(lines)


def test_sentry_https_cors_memory_rate_limits_and_failed_webhooks_are_each_named(
    seeded, migrated_database, redis_url, stripe_emulator
):
    with seeded.app_context():
        db.session.execute(
            sa.text(
                "INSERT INTO stripe_events (id, type, livemode, stripe_created, received_at, status, attempts, payload, "
                "error) VALUES ('evt_failed_lately', 'invoice.payment_failed', false, now(), now(), 'failed', 3, '{}', "
                "'KeyError: parent')"
            )
        )
        db.session.commit()
    status, lines = doctor(
        migrated_database,
        "",
        stripe_emulator.url,
        SENTRY_DSN=None,
        APP_BASE_URL="http://billing.example.com",
        ALLOWED_ORIGINS='["*", "https://ok.example"]',
    )
    text = "\n".join(lines)
    assert status == 1

    def failure(title: str) -> tuple[str, str]:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"✗ {title}"))
        return lines[index], lines[index + 1]

    line, fix = failure("Recent webhook deliveries")
    assert "1 of 1 event(s) of the last 24 hours failed (e.g. evt_failed_lately)" in line
    assert "flask stripe replay-events --failed" in fix
    line, fix = failure("Error monitoring")
    assert "SENTRY_DSN is not set" in line and "deploy/.env.example" in fix
    line, _ = failure("APP_BASE_URL")
    assert "http://billing.example.com is not https" in line
    line, _ = failure("CORS origins")
    assert "not https or a wildcard: *" in line and "ok.example" not in line
    line, fix = failure("Rate limiting")
    assert "counted in memory storage" in line and "REDIS_URL" in fix
    assert "deploy/.env.example" in text or "REDIS_URL not set" in text


def test_mail_that_would_never_reach_a_customer_is_named(
    seeded, migrated_database, redis_url, stripe_emulator, smtp_sink
):
    def mail_line(**settings) -> tuple[str, str]:
        status, lines = doctor(migrated_database, redis_url, stripe_emulator.url, **settings)
        index = next(i for i, line in enumerate(lines) if line.startswith(("✓ Mail", "✗ Mail")))
        assert status == 1
        return lines[index], lines[index + 1]

    line, fix = mail_line()  # production without MAIL_SERVER: mails go to instance/mail/
    assert line == "✗ Mail — MAIL_SERVER is not set: mails are written to instance/mail/ and never reach anyone"
    assert "set MAIL_SERVER, MAIL_PORT" in fix

    port = closed_port()
    line, fix = mail_line(**mail_settings(port))
    assert line.startswith(f"✗ Mail — 127.0.0.1:{port} did not take a connection: ConnectionRefusedError")
    assert "MAIL_PORT" in fix

    line, fix = mail_line(**mail_settings(smtp_sink.port, sender="Smart Strategies Builder <billing@localhost>"))
    assert line == f"✗ Mail — 127.0.0.1:{smtp_sink.port} answers, but mail would come from billing@localhost"
    assert "MAIL_DEFAULT_SENDER" in fix
