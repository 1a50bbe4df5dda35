"""The emulator's webhook events have the keys of Stripe's documented examples (tests/fixtures/stripe-docs).

For every event type the app's webhook endpoint listens to (``ENDPOINT_EVENTS``) that has a fixture (and the
other fixtures too), the emulator's event is produced by the same story the fixture tells, then the keys are
compared, values ignored: the envelope and ``data.previous_attributes`` exactly, ``data.object`` recursively
(list items merged). The fixtures are 2025-11-17.clover examples and the emulator speaks 2026-10-28.endive,
so the emulator may carry keys stripe-python 16.1.0 declares at that place that the older example lacks
(``declared_at``); every other difference must be in ``KNOWN`` with its reason. A key Stripe omits although
the library declares it (``library_shapes.OMITTED``: an event's ``account``/``context``, a session's
``line_items``) must stay absent.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import stripe
from emulator_helpers import subscribe
from library_shapes import OMITTED, _members, _object_classes, declared
from stripe._list_object import ListObject

from app.services.stripe_admin import ENDPOINT_EVENTS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stripe-docs"
CLASSES = {
    "checkout.session": stripe.checkout.Session,
    "customer": stripe.Customer,
    "subscription": stripe.Subscription,
    "invoice": stripe.Invoice,
}
LIST_KEYS = {"object", "data", "has_more", "total_count", "url"}

#: Known, justified differences: (event type or "*", "fixture only" | "emulator only", key path).
KNOWN = {
    # The docs' Session example is a payment-mode session; in subscription mode `invoice_creation` is null
    # (Checkout creates the subscription's invoices itself), so its sub-keys are absent here.
    *(
        ("checkout.session.completed", "fixture only", f"data.object.invoice_creation.{key}")
        for key in (
            "enabled",
            "invoice_data",
            "invoice_data.account_tax_ids",
            "invoice_data.custom_fields",
            "invoice_data.description",
            "invoice_data.footer",
            "invoice_data.issuer",
            "invoice_data.metadata",
            "invoice_data.rendering_options",
        )
    ),
    # 2025-03-31.basil moved it to `collected_information.shipping_details`; the example still shows the old
    # key, stripe-python 16.1.0 no longer declares it.
    ("checkout.session.completed", "fixture only", "data.object.shipping_details"),
    # Removed from Invoice by 2025-03-31.basil (SOURCES.md); the example still shows it, the library does not
    # declare it.
    ("invoice.paid", "fixture only", "data.object.transfer_data"),
    ("invoice.payment_succeeded", "fixture only", "data.object.transfer_data"),
    ("invoice.payment_failed", "fixture only", "data.object.transfer_data"),
    # The docs' example plan shows `discounts: null`; Plan has no such field in the library's declaration.
    *(
        (etype, "fixture only", "data.object.items.data[].plan.discounts")
        for etype in ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
    ),
}


def keys(node, prefix: str = "") -> set[str]:
    """Every key path under ``node`` (``a.b``; list items merged as ``a[]``); metadata's own keys are values."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            if key != "metadata":
                out |= keys(value, path)
    elif isinstance(node, list):
        for value in node:
            out |= keys(value, prefix + "[]")
    return out


def declared_at(cls: type, path: str) -> bool:
    """Whether stripe-python declares the key at ``path`` (``items.data[].plan.meter``) under ``cls``, and
    Stripe does not omit it there."""
    current: typing.Any = cls
    item_type: typing.Any = None
    parts = path.split(".")
    for i, part in enumerate(parts):
        name = part.removesuffix("[]")
        if current is ListObject:
            if name not in LIST_KEYS:
                return False
            current = item_type if name == "data" else None
            continue
        if not isinstance(current, type):
            return False
        fields = declared(current)
        if name not in fields or name in OMITTED.get(getattr(current, "OBJECT_NAME", ""), set()):
            return False
        if i == len(parts) - 1:
            return True
        current, item_type = None, None
        for member in _members(fields[name]):
            origin = typing.get_origin(member)
            if origin is ListObject or (isinstance(member, type) and issubclass(member, ListObject)):
                current, item_type = ListObject, (typing.get_args(member) or (None,))[0]
            elif origin is list:
                inner = _object_classes(typing.get_args(member)[0])
                current = inner[0] if inner else None
        if current is None:
            classes = _object_classes(fields[name])
            current = classes[0] if len(classes) == 1 else None
    return True


def differences(etype: str, fixture: dict, ours: dict) -> list[str]:
    """Key differences not explained by the library's declaration or ``KNOWN``."""
    cls = CLASSES[fixture["data"]["object"]["object"]]
    theirs, mine = keys(fixture), keys(ours)
    problems = []
    for side, extra in (("fixture only", theirs - mine), ("emulator only", mine - theirs)):
        for path in sorted(extra):
            if (etype, side, path) in KNOWN or ("*", side, path) in KNOWN:
                continue
            if (
                side == "emulator only"
                and path.startswith("data.object.")
                and declared_at(cls, path.removeprefix("data.object."))
            ):
                continue
            problems.append(f"{side}: {path}")
    return problems


def documented_story(emulator, client, receiver) -> dict[str, dict]:
    """The fixtures' story on the emulator: Checkout for Pro, an email change, cancel at period end, the end of
    the period; a second subscriber whose renewal fails. One webhook event of each type, as delivered."""
    sub = subscribe(emulator, client, "price_pro_monthly")
    client.v1.customers.update(sub.customer, {"email": "jenny.rosen@example.com"})
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    subscribe(emulator, client, "price_pro_monthly", card="4000000000000341")  # pays now, renewal fails
    emulator.advance(days=32)
    emulator.flush()
    chosen = {
        "customer.updated": lambda e: "email" in e["data"].get("previous_attributes", {}),
        "customer.subscription.updated": lambda e: "cancel_at_period_end" in e["data"].get("previous_attributes", {}),
    }
    events: dict[str, dict] = {}
    for event in receiver.events():
        if event["type"] not in events and chosen.get(event["type"], lambda e: True)(event):
            events[event["type"]] = event
    return events


def test_events_have_the_keys_of_stripes_examples(emulator, client, receiver):
    fixtures = {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}
    assert {t for t in ENDPOINT_EVENTS if t in fixtures} >= {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.updated",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
    }
    events = documented_story(emulator, client, receiver)
    problems = {}
    for etype, fixture in fixtures.items():
        assert etype in events, f"the emulator sent no {etype}"
        found = differences(etype, fixture, events[etype])
        if found:
            problems[etype] = found
    assert not problems, json.dumps(problems, indent=1)


def test_the_comparison_sees_drift():
    """Sanity: a key Stripe omits, a lost ``total_count`` and an undeclared extra key are all reported."""
    fixture = json.loads((FIXTURES / "invoice.paid.json").read_text())
    ours = json.loads(json.dumps(fixture))
    del ours["data"]["object"]["transfer_data"]  # KNOWN
    ours["data"]["object"]["customer_account"] = None  # declared by the library, newer than the example
    assert differences("invoice.paid", fixture, ours) == []
    ours["account"] = None
    del ours["data"]["object"]["lines"]["total_count"]
    ours["data"]["object"]["lines"]["data"][0]["bogus"] = 1
    assert differences("invoice.paid", fixture, ours) == [
        "fixture only: data.object.lines.total_count",
        "emulator only: account",
        "emulator only: data.object.lines.data[].bogus",
    ]
    session = json.loads((FIXTURES / "checkout.session.completed.json").read_text())
    with_line_items = json.loads(json.dumps(session))
    with_line_items["data"]["object"]["line_items"] = None
    assert differences("checkout.session.completed", session, with_line_items) == [
        "emulator only: data.object.line_items"
    ]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("items.data[].plan.meter", True),
        ("items.total_count", True),
        ("items.data[].bogus", False),
        ("billing_mode.flexible.proration_discounts", True),
        ("discounts", True),
    ],
)
def test_declared_at_walks_the_library(path, expected):
    assert declared_at(stripe.Subscription, path) is expected
