"""`flask seed-plans` and scripts/seed_plans.py: the guide's output, idempotence, production refusal."""

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.cli import whole_dollars_or_cents
from app.extensions import db
from app.models import PlanFeature, SubscriptionPlan
from app.services.catalog import SeedError, catalog, plan_view_for_price, seed_plans

ROOT = Path(__file__).resolve().parent.parent
GUIDE_SQL = sa.text(
    "SELECT sp.name, COUNT(pf.id) FROM subscription_plans sp "
    "LEFT JOIN plan_features pf ON pf.plan_id = sp.id GROUP BY sp.name"
)


def counts(app):
    with app.app_context():
        return dict(db.session.execute(GUIDE_SQL).all())


def test_seed_creates_the_three_plans_in_the_guides_format(app, runner):
    result = runner.invoke(args=["seed-plans"])
    assert result.exit_code == 0, result.output
    out = result.output
    banner = "=" * 70
    assert out.startswith(f"{banner}\nSubscription Plans Seed Script\n{banner}\n\nSeeding subscription plans...\n")
    assert "  ✓ Created Free plan with 7 features\n" in out
    assert "  ✓ Created Starter plan with 7 features\n" in out
    assert "  ✓ Created Pro plan with 9 features\n" in out
    assert "✓ Successfully seeded 3 subscription plans with production Stripe price IDs\n" in out
    assert "  • Free Plan    ($0/mo) - Price ID: price_free_monthly\n" in out
    assert (
        "  • Starter Plan ($19.99/mo or $199.99/yr)\n"
        "    - Monthly: price_starter_monthly\n"
        "    - Yearly:  price_starter_yearly\n"
    ) in out
    assert "  • Pro Plan     ($49.99/mo or $479.99/yr)\n" in out
    assert out.endswith(f"{banner}\nSeed completed successfully!\n{banner}\n")
    assert counts(app) == {"free": 7, "starter": 7, "pro": 9}
    with app.app_context():
        pro = db.session.scalar(sa.select(SubscriptionPlan).where(SubscriptionPlan.name == "pro"))
        assert pro.price_monthly == Decimal("49.99") and pro.price_yearly == Decimal("479.99")
        features = {f.key: f.value for f in pro.features}
        assert features["strategies_max"] is None and features["history_years"] == 20
        assert features["api_access"] is True and "strategy_templates" not in features
        free = db.session.scalar(sa.select(SubscriptionPlan).where(SubscriptionPlan.name == "free"))
        assert free.price_yearly is None and free.stripe_price_id_yearly is None
        assert {f.key: f.value for f in free.features}["strategies_max"] == 3


def test_second_run_updates_and_adds_no_rows(app, runner):
    runner.invoke(args=["seed-plans"])
    with app.app_context():
        before = (
            db.session.scalar(sa.select(sa.func.count(SubscriptionPlan.id))),
            db.session.scalar(sa.select(sa.func.max(PlanFeature.id))),
        )
    result = runner.invoke(args=["seed-plans"])
    assert result.exit_code == 0
    assert "  ✓ Updated Pro plan with 9 features\n" in result.output
    assert "✓ Created" not in result.output
    assert "\nPlans:\n" in result.output and "Plans created:" not in result.output
    with app.app_context():
        after = (
            db.session.scalar(sa.select(sa.func.count(SubscriptionPlan.id))),
            db.session.scalar(sa.select(sa.func.max(PlanFeature.id))),
        )
    assert after == before
    assert counts(app) == {"free": 7, "starter": 7, "pro": 9}


@pytest.mark.parametrize(
    "amount, shown", [("0.00", "$0"), ("20.00", "$20"), ("19.99", "$19.99"), ("1999.50", "$1,999.50")]
)
def test_report_prices_show_cents_only_when_there_are_some(amount, shown):
    assert whole_dollars_or_cents(Decimal(amount)) == shown


def test_price_ids_come_from_the_environment(app):
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = "price_1ProMonthlyLive"
    with app.app_context():
        from app.services.catalog import seed_plans_from_config

        seed_plans_from_config()
        pro = db.session.scalar(sa.select(SubscriptionPlan).where(SubscriptionPlan.name == "pro"))
        assert pro.stripe_price_id_monthly == "price_1ProMonthlyLive"


def test_missing_price_id_in_production_writes_nothing(app):
    price_ids = {
        "STRIPE_PRICE_FREE_MONTHLY": "price_f",
        "STRIPE_PRICE_STARTER_MONTHLY": "price_sm",
        "STRIPE_PRICE_STARTER_YEARLY": None,
        "STRIPE_PRICE_PRO_MONTHLY": "price_pm",
        "STRIPE_PRICE_PRO_YEARLY": "price_py",
    }
    with app.app_context():
        with pytest.raises(SeedError, match="STRIPE_PRICE_STARTER_YEARLY is not set"):
            seed_plans(price_ids, require_price_ids=True)
    assert counts(app) == {}


def test_seed_script_in_production_without_a_price_id_exits_with_one_line(database_url, redis_url):
    from tests.test_config import production_env

    env = {k: v for k, v in os.environ.items()}
    env.update(production_env(DATABASE_URL=database_url, REDIS_URL=redis_url))
    del env["STRIPE_PRICE_PRO_YEARLY"]
    result = subprocess.run(
        [sys.executable, "scripts/seed_plans.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["Refusing to start: STRIPE_PRICE_PRO_YEARLY is not set"]


def test_seed_script_is_the_same_code(app, database_url, redis_url):
    env = dict(os.environ, ENVIRONMENT="testing", DATABASE_URL=database_url, REDIS_URL=redis_url)
    result = subprocess.run(
        [sys.executable, "scripts/seed_plans.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "✓ Created Pro plan with 9 features" in result.stdout
    assert "Seed completed successfully!" in result.stdout
    assert counts(app) == {"free": 7, "starter": 7, "pro": 9}


def test_a_price_seeded_by_another_process_is_found_by_a_webhooks_lookup(seeded):
    """The catalogue is kept per process for a minute: a price another process seeded since (here: written to the
    table behind this process's back) is read afresh, not skipped as an unknown price."""
    with seeded.app_context():
        assert plan_view_for_price("price_pro_reseeded") is None
        catalog()  # this process's copy, read now
        db.session.execute(
            sa.update(SubscriptionPlan)
            .where(SubscriptionPlan.name == "pro")
            .values(stripe_price_id_monthly="price_pro_reseeded")
        )
        db.session.commit()
        found = plan_view_for_price("price_pro_reseeded")
    assert found is not None and (found[0].name, found[1]) == ("pro", "monthly")
