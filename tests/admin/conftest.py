"""Admin fixtures: a logged-in admin, and rows written straight into the tables the figures are computed from."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, SubscriptionPlan, UserSubscription
from tests.factories import UserFactory

NOW = datetime.now(UTC)
_ids = itertools.count(1)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def plan_id(name: str) -> int:
    return db.session.scalar(sa.select(SubscriptionPlan.id).where(SubscriptionPlan.name == name))


def add_subscription(
    user, plan: str, cycle: str = "monthly", status: str = "active", started: float = 45, ended: float | None = None
) -> UserSubscription:
    """A subscription row as sync_customer would have written it; `started`/`ended` in days ago."""
    row = UserSubscription(
        user_id=user.id,
        plan_id=plan_id(plan),
        billing_cycle=cycle,
        status=status,
        stripe_subscription_id=f"sub_admin_{next(_ids)}",
        stripe_price_id=f"price_{plan}_{cycle}",
        current_period_start=days_ago(started),
        current_period_end=days_ago(started) + timedelta(days=30),
        created_at=days_ago(started),
        updated_at=days_ago(ended if ended is not None else started),
        canceled_at=days_ago(ended) if ended is not None else None,
        ended_at=days_ago(ended) if ended is not None else None,
    )
    db.session.add(row)
    db.session.commit()
    return row


def add_audit(user, action: str, days: float = 1, **details) -> AuditLog:
    entry = AuditLog(user_id=user.id if user else None, action=action, details=details, created_at=days_ago(days))
    db.session.add(entry)
    db.session.commit()
    return entry


@pytest.fixture
def admin_client(seeded, client, auth):
    """The test client logged in as an admin."""
    with seeded.app_context():
        UserFactory(email="admin@example.com", is_admin=True)
    response = auth.login(email="admin@example.com")
    assert response.status_code == 302, response.status_code
    return client


def demo_book(app, seed: int = 7) -> None:
    """A realistic quarter of a small SaaS: ~150 sign-ups, paying customers on every plan and cycle, churn,
    upgrades, failed payments and webhook events (one failed), for the browser test and the screenshot."""
    import random

    from app.models import StripeEvent, User

    rng = random.Random(seed)
    with app.app_context():
        password_hash = db.session.scalar(sa.select(User.password_hash).limit(1))  # hashing 150 times is slow
        users = []
        for i in range(150):
            joined = rng.uniform(0, 120) if i >= 40 else rng.uniform(95, 120)
            user = User(
                email=f"{rng.choice(['alex', 'sam', 'jo', 'kim', 'lee', 'max', 'ria', 'noa'])}.{i}@example.com",
                password_hash=password_hash,
                created_at=days_ago(joined),
                updated_at=days_ago(joined),
                stripe_customer_id=f"cus_demo{i:03d}",
            )
            db.session.add(user)
            users.append((user, joined))
        db.session.commit()
        now = NOW
        for index, (user, joined) in enumerate(users):
            roll = rng.random()
            if roll > 0.42:
                continue  # stays on Free
            started = max(joined - rng.uniform(0, 6), 0.2)
            plan = "pro" if rng.random() < 0.38 else "starter"
            cycle = "yearly" if rng.random() < 0.3 else "monthly"
            status, ended = "active", None
            if rng.random() < 0.12 and started > 20:
                status, ended = "canceled", rng.uniform(1, started - 10)
            elif rng.random() < 0.05:
                status = "past_due"
            add_subscription(user, plan, cycle, status, started=started, ended=ended)
            add_audit(
                user,
                "subscription.activated",
                started,
                plan=plan,
                billing_cycle=cycle,
                status="active",
                subscription=f"sub_demo{index}",
            )
            if plan == "starter" and rng.random() < 0.2 and started > 10:
                add_audit(
                    user,
                    "subscription.plan_changed",
                    rng.uniform(1, started - 5),
                    from_plan="starter",
                    from_cycle=cycle,
                    plan="pro",
                    billing_cycle=cycle,
                )
            add_audit(user, "payment.succeeded", started, invoice=f"in_demo{index}a", amount=1999, currency="usd")
            if status == "past_due":
                add_audit(
                    user,
                    "payment.failed",
                    rng.uniform(0.5, 3),
                    invoice=f"in_demo{index}b",
                    attempt_key=f"in_demo{index}b:1",
                    amount=4999 if plan == "pro" else 1999,
                )
            if status == "canceled":
                add_audit(user, "subscription.canceled", ended, plan=plan, previous_status="active")
        types = [
            "invoice.payment_succeeded",
            "customer.subscription.updated",
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.payment_succeeded",
            "customer.updated",
        ]
        for i in range(24):
            received = now - timedelta(minutes=37 * i + rng.randint(0, 20))
            etype = types[i % len(types)]
            failed = i == 5
            db.session.add(
                StripeEvent(
                    id=f"evt_1Q{rng.getrandbits(48):012x}",
                    type=etype,
                    stripe_created=received,
                    received_at=received,
                    processed_at=None if failed else received,
                    status="failed" if failed else "processed",
                    attempts=3 if failed else 1,
                    error="OperationalError: could not connect to server: Connection refused" if failed else None,
                    payload={"type": etype, "data": {"object": {"customer": f"cus_demo{i:03d}"}}},
                )
            )
        db.session.commit()
