"""Operator commands: `flask seed-plans`, `flask users create`, `flask stripe …`.

Every command the `flask` command finds on the app (these, Flask-Migrate's `flask db …`, `flask queue …`) reports
what an operator can fix — Stripe refusing the key or out of reach, the database out of reach or not migrated — in
one line and exit status 1, instead of a traceback (`OperatorCommands`, `readable_errors`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from decimal import Decimal

import click
import redis
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy.exc import DBAPIError

from app.extensions import db
from app.logging import redact_text
from app.services import DomainError
from app.services.accounts import check_new_password, create_user, find_user_by_email, send_verification
from app.services.catalog import seed_plans_from_config
from app.services.counts import recount
from app.services.doctor import database_problem, run_checks
from app.services.stripe_admin import (
    EXTRA_EVENTS,
    configure_portal,
    create_catalog,
    customers_to_sync,
    events_to_replay,
    reconcile,
    register_webhook_endpoint,
)
from app.services.stripe_gateway import operator_message
from app.services.triggers import MAKERS, start, wait_for_event
from app.services.webhooks import reprocess

BANNER = "=" * 70


def redis_problem(error: redis.ConnectionError) -> str:
    """One line naming the Redis that did not answer (its address without a password)."""
    reason = redact_text(" ".join(str(error).split())).rstrip(".")
    return f"Could not reach Redis ({reason}): check REDIS_URL and TASK_QUEUE_URL, and that Redis is running"


@contextmanager
def readable_errors() -> Iterator[None]:
    """Turn the errors an operator causes and can fix into `click.ClickException` (one line, exit status 1).

    Stripe's errors arrive as domain errors whose customer message ("Billing is temporarily unavailable") says
    nothing to an operator: `operator_message` gives the cause (the key refused, the host unreachable) instead.
    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except DomainError as error:
        raise click.ClickException(operator_message(error)) from None
    except DBAPIError as error:
        raise click.ClickException("{}: {}".format(*database_problem(error))) from None
    except redis.ConnectionError as error:
        raise click.ClickException(redis_problem(error)) from None


@contextmanager
def one_line_or_exit() -> Iterator[None]:
    """`readable_errors` for code the `flask` command does not run (`alembic …`, scripts/): the same one line on
    stderr, then exit status 1, where click would print it for a `flask` command."""
    try:
        with readable_errors():
            yield
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)


def answering_in_one_line(command: click.Command) -> click.Command:
    """A copy of `command` whose run goes through `readable_errors` (a group's covers its subcommands).

    A copy, because some commands are shared by every app of the process (Flask-Migrate's `db` group is one
    module-level object): the original is left as it is.
    """
    readable = copy.copy(command)
    run = command.invoke

    def invoke(ctx: click.Context):
        with readable_errors():
            return run(ctx)

    readable.invoke = invoke  # type: ignore[method-assign]
    return readable


class OperatorCommands(AppGroup):
    """The app's command group (`app.cli`): each command it hands out answers an operator's error in one line.

    `flask` asks `app.cli.get_command` for every command of the app — ours, Flask-Migrate's `db`, the blueprints'
    — so this is the one place that sees them all run, without forking any of them.
    """

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else answering_in_one_line(command)


def whole_dollars_or_cents(amount: Decimal) -> str:
    """`$0`, `$20`, `$19.99`: the seed report's prices, cents shown only when there are some."""
    return f"${amount:,.0f}" if amount == amount.to_integral_value() else f"${amount:,.2f}"


def print_seeded_plans(results) -> None:
    """One line per plan as it was written: `✓ Created …` the first time, `✓ Updated …` on every later run."""
    for item in results:
        verb = "Created" if item.created else "Updated"
        click.echo(f"  ✓ {verb} {item.plan.display_name} plan with {item.feature_count} features")


def print_plan_prices(results) -> None:
    """The prices and Stripe price ids stored: a plan without a yearly price on one line, the others on three. Under
    the guide's "Plans created:" when the run created any; a later run, which only updated them, says "Plans:"."""
    labels = {item.plan.name: f"{item.plan.display_name} Plan" for item in results}
    width = max(map(len, labels.values()), default=0)
    click.echo("Plans created:" if any(item.created for item in results) else "Plans:")
    for item in results:
        plan = item.plan
        monthly = whole_dollars_or_cents(plan.price_monthly)
        label = labels[plan.name].ljust(width)
        if plan.price_yearly is None:
            click.echo(f"  • {label} ({monthly}/mo) - Price ID: {plan.stripe_price_id_monthly or '—'}")
            continue
        click.echo(f"  • {label} ({monthly}/mo or {whole_dollars_or_cents(plan.price_yearly)}/yr)")
        click.echo(f"    - Monthly: {plan.stripe_price_id_monthly or '—'}")
        click.echo(f"    - Yearly:  {plan.stripe_price_id_yearly or '—'}")


def run_seed() -> None:
    """Seed the plans and print the report (the same for `flask seed-plans` and scripts/seed_plans.py).

    A domain error (a price id missing in production) exits 1 with one line on stderr, nothing written.
    """
    click.echo(BANNER)
    click.echo("Subscription Plans Seed Script")
    click.echo(BANNER)
    click.echo("")
    click.echo("Seeding subscription plans...")
    try:
        results = seed_plans_from_config()
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    print_seeded_plans(results)
    click.echo("")
    click.echo(f"✓ Successfully seeded {len(results)} subscription plans with production Stripe price IDs")
    click.echo("")
    print_plan_prices(results)
    click.echo("")
    click.echo("Stripe integration ready for production use.")
    click.echo("")
    click.echo(BANNER)
    click.echo("Seed completed successfully!")
    click.echo(BANNER)


def portal_settings_lines(features: dict) -> list[str]:
    """The portal settings sent, in the words of the Dashboard's page."""
    switching = features["subscription_update"]
    prices = [price for product in switching["products"] for price in product["prices"]]
    return [
        "payment methods: updatable",
        f"billing info: updatable ({', '.join(features['customer_update']['allowed_updates'])})",
        f"cancellation: {features['subscription_cancel']['mode'].replace('_', ' ')} only",
        "invoice history: shown",
        f"plan switching: {', '.join(prices) or 'none'} ({switching['proration_behavior'].replace('_', ' ')})",
        "downgrades: at period end (a cheaper price or a shorter interval)",
    ]


def new_password(typed: str, email: str) -> str:
    """The password typed at the prompt of `flask users create`, when a new account may have it (else the prompt
    says why and asks again)."""
    try:
        check_new_password(typed, email)
    except DomainError as exc:
        raise click.BadParameter(exc.message) from None
    return typed


def register(app: Flask) -> None:
    # Flask made app.cli a plain AppGroup; Flask-Migrate and the blueprints have already added theirs to it.
    app.cli = OperatorCommands(app.cli.name, commands=dict(app.cli.commands), help=app.cli.help)

    @app.cli.command("seed-plans")
    def seed_plans_command():
        """Create or update the Free, Starter and Pro plans and their features (idempotent)."""
        run_seed()

    users = AppGroup("users", help="Manage user accounts.")

    @users.command("create")
    @click.argument("email")
    @click.option("--password", help="At least 8 characters, not a common one (asked for, twice, when not given).")
    @click.option("--admin", is_flag=True, help="Give access to the admin dashboard.")
    def create_user_command(email: str, password: str | None, admin: bool):
        """Create an account (for operators); its owner is mailed the link that confirms the address, as at sign-up
        (Checkout asks for a confirmed email)."""
        # Asked before the password is typed: the database out of reach or not migrated (one line, through
        # `readable_errors`), or the email taken, would otherwise turn up only after it was typed twice.
        if find_user_by_email(email) is not None:
            raise click.ClickException("An account with this email already exists.")  # create_user's words
        db.session.rollback()  # no transaction left open while the operator types
        if password is None:  # a weak one is refused as it is typed, and asked for again
            password = click.prompt(
                "Password",
                hide_input=True,
                confirmation_prompt=True,
                value_proc=lambda typed: new_password(typed, email),
            )
        try:
            user = create_user(email, password, is_admin=admin)
        except DomainError as exc:
            raise click.ClickException(exc.message) from None
        send_verification(user)
        click.echo(
            f"✓ Created {'admin ' if admin else ''}user {user.email} (id {user.id}); a link to confirm the email was mailed"
        )

    app.cli.add_command(users)
    register_stripe_commands(app)
    register_doctor(app)


def register_stripe_commands(app: Flask) -> None:
    """`flask stripe …`: catalog, webhook endpoint, portal configuration, reconcile, replay, trigger."""
    stripe_group = AppGroup(
        "stripe", help="Stripe: catalog, webhook endpoint, portal configuration, reconcile, replay, trigger."
    )

    @stripe_group.command("create-catalog")
    def create_catalog_command():
        """Create the three products and five prices (with lookup keys) unless they exist; print STRIPE_PRICE_*."""
        results = create_catalog()
        for item in results:
            click.echo(
                f"{'✓ Created' if item.created else '✓ Exists '} {item.lookup_key:<16} {item.price_id}", err=True
            )
        click.echo("# Paste into the environment:", err=True)
        for item in results:
            click.echo(f"{item.env}={item.price_id}")

    @stripe_group.command("webhook-endpoint")
    @click.option("--url", required=True, help="This app's public webhook URL, ending in /billing/webhooks/stripe.")
    def webhook_endpoint_command(url: str):
        """Register the webhook endpoint (the six events, three extras, this library's API version); print its secret."""
        if not url.startswith(("https://", "http://")):
            raise click.ClickException("--url must be an absolute http(s) URL")
        registered = register_webhook_endpoint(url)
        endpoint = registered.endpoint
        if not registered.created:
            if registered.added:
                click.echo(f"✓ Endpoint {endpoint['id']} at {url} lacked {len(registered.added)} event(s), now added:")
                for event_type in registered.added:
                    reason = EXTRA_EVENTS.get(event_type)
                    click.echo(f"  {'extra' if reason else 'added'}: {event_type}" + (f" — {reason}" if reason else ""))
            else:
                click.echo(
                    f"✓ Endpoint {endpoint['id']} already registers {url} with every event, API version "
                    f"{endpoint.get('api_version')}"
                )
            click.echo("  (its secret was shown when it was created; roll it in the Dashboard if lost)")
            return
        click.echo(f"✓ Created endpoint {endpoint['id']} for {url}")
        click.echo(f"  api_version: {endpoint.get('api_version')}")
        click.echo(f"  events: {', '.join(e for e in endpoint['enabled_events'] if e not in EXTRA_EVENTS)}")
        for event_type, reason in EXTRA_EVENTS.items():
            if event_type in endpoint["enabled_events"]:
                click.echo(f"  extra: {event_type} — {reason}")
        click.echo(f"STRIPE_WEBHOOK_SECRET={endpoint['secret']}")

    @stripe_group.command("portal-config")
    def portal_config_command():
        """Create or update the Customer Portal configuration with the deployment settings; print what it set."""
        configuration, created, features = configure_portal()
        click.echo(f"✓ {'Created' if created else 'Updated'} Customer Portal configuration {configuration['id']}")
        for line in portal_settings_lines(features):
            click.echo(f"  {line}")
        if created and not configuration.get("is_default"):
            click.echo(
                "  note: it is not the account's default; make it the default in the Stripe Dashboard → "
                "Settings → Billing → Customer portal",
                err=True,
            )

    @stripe_group.command("sync")
    @click.option("--user", "email", help="Only this user's customer.")
    @click.option(
        "--all", "sync_all", is_flag=True, help="Every user linked to a Stripe customer (the nightly reconcile)."
    )
    def sync_command(email: str | None, sync_all: bool):
        """Re-read customers from Stripe into the database and print the drift repaired."""
        if bool(email) == bool(sync_all):
            raise click.UsageError("give --user EMAIL or --all")
        customers = customers_to_sync(email)
        if email and not customers:
            raise click.ClickException(f"no user {email} with a Stripe customer")
        drifts = []
        with click.progressbar(
            reconcile(customers), length=len(customers), label="Syncing customers", file=sys.stderr
        ) as bar:
            for drift in bar:
                if drift.actions:
                    drifts.append(drift)
        for drift in drifts:
            click.echo(f"✓ repaired {drift.email} ({drift.customer_id}): {', '.join(drift.actions)}")
        click.echo(f"Synced {len(customers)} customer(s); {len(drifts)} had drifted.")

    @stripe_group.command("replay-events")
    @click.option("--failed", is_flag=True, help="Only events whose handling failed.")
    @click.option("--since", type=click.DateTime(), help="Only events received since this date (UTC).")
    @click.option("--id", "event_id", help="One event by id (evt_…).")
    def replay_events_command(failed: bool, since, event_id: str | None):
        """Run the handlers of recorded events again (idempotent: applying an event twice changes nothing)."""
        since_utc = since.replace(tzinfo=UTC) if since else None
        ids = events_to_replay(failed, since_utc, event_id)
        if event_id and not ids:
            raise click.ClickException(f"no recorded event {event_id}")
        failures = 0
        for evt in ids:
            try:
                outcome = reprocess(evt)
            except Exception as exc:  # keep going: the row records the error, the summary counts it
                failures += 1
                click.echo(f"✗ {evt}: {type(exc).__name__}: {exc}")
            else:
                click.echo(f"✓ {evt} {outcome.event_type}: {outcome.status}")
        click.echo(f"Replayed {len(ids)} event(s), {failures} failed.")
        if failures:
            raise SystemExit(1)

    @stripe_group.command("trigger")
    @click.argument("event_type", metavar="EVENT", type=click.Choice(list(MAKERS)))
    def trigger_command(event_type: str):
        """Make Stripe send EVENT to the registered endpoints (`stripe trigger`, offline in the emulator); print its id."""
        started = start(event_type)
        if started.action:
            click.echo(f"Waiting for {event_type}: {started.action}", err=True)
        event = wait_for_event(event_type, started.customer_id, timeout=600 if started.action else 10)
        click.echo(
            f"✓ {event_type} {event['id']} (customer {started.customer_id}), "
            f"sent to {event.get('pending_webhooks', 0)} endpoint(s)"
        )
        click.echo(event["id"])

    app.cli.add_command(stripe_group)

    admin_group = AppGroup("admin", help="Look after the admin dashboard's data.")

    @admin_group.command("recount")
    def recount_command():
        """Rebuild the dashboard's maintained counts from their tables (after a TRUNCATE by hand)."""
        counted = recount()
        click.echo("✓ Dashboard counts rebuilt from the tables")
        for table, rows in counted.rows.items():
            click.echo(f"  {table}: {rows} rows")

    app.cli.add_command(admin_group)


def register_doctor(app: Flask) -> None:
    """`flask doctor`: the production checklist, one ✓/✗ line each; exit 0 only when every line is ✓."""

    @app.cli.command("doctor")
    def doctor_command():
        """Check the production checklist: variables, migrations, plans and prices, webhook, portal, Redis."""
        failures = 0
        for check in run_checks():
            failures += not check.ok
            for line in check.lines():
                click.echo(line)
        click.echo("")
        if failures:
            click.echo(f"{failures} check(s) failed.")
            raise SystemExit(1)
        click.echo("All checks passed: ready for production.")
