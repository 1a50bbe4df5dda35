"""`flask stripe portal-config` before `flask seed-plans`: refused in one line, the portal left as it was.

The operator review: run first, it printed "✓ Updated … plan switching: none" and exited 0, leaving the Customer
Portal without plan switching.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import SubscriptionPlan


def test_portal_config_before_seed_plans_is_refused_and_changes_nothing(app, runner, stripe_emulator):
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(SubscriptionPlan.id))) == 0
    client = stripe_emulator.client()
    before = [c.to_dict() for c in client.v1.billing_portal.configurations.list().data]

    result = runner.invoke(args=["stripe", "portal-config"])

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "run `flask seed-plans` first" in lines[0]
    assert "✓" not in result.output and "Traceback" not in result.output
    after = [c.to_dict() for c in client.v1.billing_portal.configurations.list().data]
    assert after == before
