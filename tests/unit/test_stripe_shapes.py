"""Reading Stripe's objects (pinned API shape) into our columns and the billing page's pending change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.services.subscriptions import scheduled_change_of
from app.services.sync import subscription_fields

T0, T1, T2 = 1798761600, 1801440000, 1803859200  # 2027-01-01, 2027-02-01, 2027-03-01 (UTC)


def utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def subscription(price="price_pro_monthly", status="active", **extra) -> dict:
    item = {"price": {"id": price}, "current_period_start": T0, "current_period_end": T1}
    return {
        "id": "sub_1",
        "status": status,
        "items": {"data": [item]},
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        **extra,
    }


FIELDS = [
    ("active pro monthly", subscription(), ("pro", "monthly", "active", False)),
    ("starter yearly", subscription("price_starter_yearly"), ("starter", "yearly", "active", False)),
    ("cancel at period end", subscription(cancel_at_period_end=True), ("pro", "monthly", "active", True)),
    ("cancel_at set", subscription(cancel_at=T1), ("pro", "monthly", "active", True)),
    ("cancel_at on an ended one", subscription(status="canceled", cancel_at=T1), ("pro", "monthly", "canceled", False)),
    ("past due", subscription(status="past_due"), ("pro", "monthly", "past_due", False)),
]


@pytest.mark.parametrize(("sub", "expected"), [case[1:] for case in FIELDS], ids=[case[0] for case in FIELDS])
def test_subscription_fields(in_catalog, sub, expected):
    fields = subscription_fields(sub)
    assert (fields["plan"].name, fields["billing_cycle"], fields["status"], fields["cancel_at_period_end"]) == expected
    assert fields["current_period_start"] == utc(T0) and fields["current_period_end"] == utc(T1)
    assert fields["stripe_price_id"] == sub["items"]["data"][0]["price"]["id"]


@pytest.mark.parametrize(
    "sub",
    [
        subscription("price_someone_elses"),
        {"id": "sub_1", "status": "active", "items": {"data": []}},
        {"id": "sub_1", "status": "active"},
    ],
)
def test_a_subscription_we_do_not_sell_gives_no_fields(in_catalog, sub):
    assert subscription_fields(sub) is None


def schedule(status="active", phases=(), current=(T0, T1)) -> dict:
    return {
        "id": "sub_sched_1",
        "status": status,
        "current_phase": {"start_date": current[0], "end_date": current[1]} if current else None,
        "phases": [{"start_date": start, "end_date": end, "items": [{"price": price}]} for start, end, price in phases],
    }


DOWNGRADE = [(T0, T1, "price_pro_monthly"), (T1, T2, "price_starter_monthly")]
SCHEDULES = [
    ("downgrade at period end", schedule(phases=DOWNGRADE), ("starter", "monthly", utc(T1))),
    ("phases out of order", schedule(phases=list(reversed(DOWNGRADE))), ("starter", "monthly", utc(T1))),
    (
        "not started yet",
        schedule(status="not_started", phases=DOWNGRADE, current=None),
        ("starter", "monthly", utc(T1)),
    ),
    ("same price next", schedule(phases=[(T0, T1, "price_pro_monthly"), (T1, T2, "price_pro_monthly")]), None),
    ("released", schedule(status="released", phases=DOWNGRADE), None),
    ("canceled", schedule(status="canceled", phases=DOWNGRADE), None),
    (
        "past phase only",
        schedule(phases=[(T0 - 100, T0, "price_starter_monthly"), (T0, T1, "price_pro_monthly")]),
        None,
    ),
    ("a price we do not sell", schedule(phases=[(T0, T1, "price_pro_monthly"), (T1, T2, "price_unknown")]), None),
]


@pytest.mark.parametrize(("sched", "expected"), [case[1:] for case in SCHEDULES], ids=[case[0] for case in SCHEDULES])
def test_scheduled_change_of(in_catalog, sched, expected):
    change = scheduled_change_of(subscription(schedule=sched))
    assert (None if change is None else (change.plan_name, change.cycle, change.at)) == expected


def test_no_schedule_means_no_change(in_catalog):
    assert scheduled_change_of(subscription(schedule=None)) is None
    assert scheduled_change_of(subscription(schedule="sub_sched_unexpanded")) is None
