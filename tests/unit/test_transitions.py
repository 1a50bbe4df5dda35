"""The audit rule: which actions a change between two snapshots of a subscription writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.services.sync import Snapshot, transitions

JAN = datetime(2027, 1, 1, tzinfo=UTC)
FEB = datetime(2027, 2, 1, tzinfo=UTC)


def snap(status="active", plan="pro", cycle="monthly", cancel=False, end=JAN) -> Snapshot:
    return Snapshot(status, plan, cycle, cancel, end)


CASES = [
    ("new active", None, snap(), ["subscription.activated"]),
    ("new trialing", None, snap(status="trialing"), ["subscription.activated"]),
    ("new past_due keeps access", None, snap(status="past_due"), ["subscription.activated"]),
    ("new canceled", None, snap(status="canceled"), ["subscription.canceled"]),
    ("new incomplete", None, snap(status="incomplete"), ["subscription.updated"]),
    ("nothing changed", snap(), snap(), []),
    ("payment done", snap(status="incomplete"), snap(), ["subscription.activated"]),
    ("payment failed", snap(), snap(status="past_due"), ["subscription.updated"]),
    ("retries over", snap(status="past_due"), snap(status="unpaid"), ["subscription.updated"]),
    ("ended", snap(), snap(status="canceled"), ["subscription.canceled"]),
    ("upgrade", snap(plan="starter"), snap(plan="pro"), ["subscription.plan_changed"]),
    ("cycle change", snap(), snap(cycle="yearly"), ["subscription.plan_changed"]),
    ("cancel scheduled", snap(), snap(cancel=True), ["subscription.cancel_scheduled"]),
    ("resumed", snap(cancel=True), snap(), ["subscription.resumed"]),
    ("renewed", snap(), snap(end=FEB), ["subscription.updated"]),
    ("period moved back", snap(end=FEB), snap(end=JAN), []),
    ("renewed while failing", snap(), snap(status="past_due", end=FEB), ["subscription.updated"]),
    (
        "canceled with pending cancel",
        snap(cancel=True),
        snap(status="canceled", cancel=True),
        ["subscription.canceled"],
    ),
    (
        "reactivated on another plan",
        snap(status="incomplete", plan="starter"),
        snap(),
        ["subscription.activated", "subscription.plan_changed"],
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_transitions(old, new, expected):
    assert [action for action, _ in transitions(old, new)] == expected


def test_details_name_what_changed():
    [(action, details)] = transitions(snap(plan="starter", cycle="yearly"), snap(plan="pro"))
    assert action == "subscription.plan_changed"
    assert details == {"from_plan": "starter", "from_cycle": "yearly", "plan": "pro", "billing_cycle": "monthly"}
    [(_, details)] = transitions(snap(), snap(cancel=True))
    assert details == {"plan": "pro", "ends_at": JAN.isoformat()}
