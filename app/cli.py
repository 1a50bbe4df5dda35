"""Operator commands: `flask seed-plans`, `flask users create`."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from app.services import DomainError
from app.services.accounts import create_user
from app.services.catalog import seed_plans_from_config
from app.templating import money

BANNER = "=" * 60


def print_seed_report(results) -> None:
    """The guide's section 3.2 format: a line per plan, the summary, the closing line."""
    for item in results:
        verb = "Created" if item.created else "Updated"
        click.echo(f"✓ {verb} {item.plan.display_name} plan with {item.feature_count} features")
    click.echo("")
    click.echo("Plan summary:")
    for item in results:
        plan = item.plan
        click.echo(f"  {plan.display_name} ({plan.name})")
        click.echo(f"    Monthly: {money(plan.price_monthly)}  price id: {plan.stripe_price_id_monthly or '—'}")
        if plan.price_yearly is not None:
            click.echo(f"    Yearly:  {money(plan.price_yearly)}  price id: {plan.stripe_price_id_yearly or '—'}")
        click.echo(f"    Features: {item.feature_count}")
    click.echo("")
    click.echo("Seed completed successfully!")


def run_seed() -> None:
    """Seed the plans, printing the guide's report; exit 1 with one line on error."""
    click.echo(BANNER)
    click.echo("Smart Strategies Builder — seeding subscription plans")
    click.echo(BANNER)
    try:
        results = seed_plans_from_config()
    except DomainError as exc:
        raise click.ClickException(exc.message)
    print_seed_report(results)


def register(app: Flask) -> None:
    @app.cli.command("seed-plans")
    def seed_plans_command():
        """Create or update the Free, Starter and Pro plans and their features (idempotent)."""
        run_seed()

    users = AppGroup("users", help="Manage user accounts.")

    @users.command("create")
    @click.argument("email")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters.")
    @click.option("--admin", is_flag=True, help="Give access to the admin dashboard.")
    def create_user_command(email: str, password: str, admin: bool):
        """Create an account (for operators)."""
        try:
            user = create_user(email, password, is_admin=admin)
        except DomainError as exc:
            raise click.ClickException(exc.message)
        click.echo(f"✓ Created {'admin ' if admin else ''}user {user.email} (id {user.id})")

    app.cli.add_command(users)
