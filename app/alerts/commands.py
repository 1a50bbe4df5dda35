"""`flask alerts …`: the alert evaluation and the digest now, for operators and tests (the task queue runs them on
their schedule)."""

from __future__ import annotations

from datetime import datetime

import click

from app.alerts.routes import bp
from app.services.alerts import evaluate_watched, send_digests


@bp.cli.command("run")
@click.option(
    "--date",
    "on",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Evaluate the newest bar on or before this day (YYYY-MM-DD) instead of today (UTC).",
)
def run_command(on: datetime | None):
    """Evaluate every watched strategy now, as the scheduled job does; real-time alerts are mailed at once."""
    click.echo(evaluate_watched(on.date() if on else None).summary())


@bp.cli.command("digest")
def digest_command():
    """Queue the daily digests now, as the scheduled job does."""
    click.echo(f"{send_digests()} digest(s) added to the mail outbox.")  # sent from there, queue or not
