"""The emulator answers in the shapes stripe-python 16.1.0 declares, and accepts and refuses what it declares.

Everything comes from the library itself: response shapes from its resource classes' annotations
(``library_shapes``: every declared field, nested objects and list items included, enums, embedded
lists), ``expand[]`` paths from its ``ExpandableField`` annotations, request parameters from its params
TypedDicts (``stripe_emulator.declared``). Upgrading stripe makes these tests fail until the emulator
follows. ``deleted`` is the one exception: Stripe only sends it (as ``true``) on deleted objects.
"""

from __future__ import annotations

import sys
import typing

import pytest
import stripe

from emulator_helpers import subscribe
from library_shapes import declared, expandable_paths, shape_problems
from stripe_emulator import declared as declared_params
from stripe_emulator.objects import API_VERSION

CLASSES = {
    "account": stripe.Account,
    "customer": stripe.Customer,
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "subscription_schedule": stripe.SubscriptionSchedule,
    "checkout.session": stripe.checkout.Session,
    "item": stripe.LineItem,
    "invoice": stripe.Invoice,
    "price": stripe.Price,
    "product": stripe.Product,
    "payment_method": stripe.PaymentMethod,
    "billing_portal.session": stripe.billing_portal.Session,
    "billing_portal.configuration": stripe.billing_portal.Configuration,
    "event": stripe.Event,
    "webhook_endpoint": stripe.WebhookEndpoint,
    "line_item": stripe.InvoiceLineItem,
    "plan": stripe.Plan,
    "invoice_payment": stripe.InvoicePayment,
}


def declared_fields(cls) -> set[str]:
    """Public, non-ClassVar annotated attributes of ``cls`` and its bases."""
    return set(declared(cls))


def test_field_lists_are_read_from_the_library():
    # Sanity: the annotations really carry the endive shape.
    assert "current_period_end" in declared_fields(stripe.SubscriptionItem)
    assert "current_period_end" not in declared_fields(stripe.Subscription)
    assert "parent" in declared_fields(stripe.Invoice)
    assert "object" in declared_fields(stripe.Customer)
    assert not any("ClassVar" in repr(v) for v in typing.get_type_hints(stripe.StripeObject).values()
                   if False)  # get_type_hints works on the base; classes use string annotations


@pytest.fixture
def objects_by_type(emulator, client, raw, receiver):
    """One JSON example of every resource, fetched over plain HTTP (the exact wire JSON)."""
    sub = subscribe(emulator, client, "price_pro_monthly")
    out = {}
    _, out["account"], _ = raw("GET", "/v1/account")
    _, cust, _ = raw("GET", f"/v1/customers/{sub.customer}")
    out["customer"] = cust
    _, s, _ = raw("GET", f"/v1/subscriptions/{sub.id}")
    out["subscription"] = s
    out["subscription_item"] = s["items"]["data"][0]
    out["plan"] = s["items"]["data"][0]["plan"]
    _, sessions, _ = raw("GET", "/v1/checkout/sessions", {"limit": 1})
    out["checkout.session"] = sessions["data"][0]
    _, items, _ = raw("GET", f"/v1/checkout/sessions/{sessions['data'][0]['id']}/line_items")
    out["item"] = items["data"][0]
    _, inv, _ = raw("GET", f"/v1/invoices/{s['latest_invoice']}")
    out["invoice"] = inv
    out["line_item"] = inv["lines"]["data"][0]
    out["invoice_payment"] = inv["payments"]["data"][0]
    _, out["price"], _ = raw("GET", "/v1/prices/price_pro_monthly")
    _, out["product"], _ = raw("GET", "/v1/products/prod_pro")
    _, pms, _ = raw("GET", "/v1/payment_methods", {"customer": sub.customer, "type": "card"})
    out["payment_method"] = pms["data"][0]
    _, out["billing_portal.session"], _ = raw("POST", "/v1/billing_portal/sessions",
                                              {"customer": sub.customer, "return_url": "http://127.0.0.1:9/account"})
    _, configurations, _ = raw("GET", "/v1/billing_portal/configurations")
    out["billing_portal.configuration"] = configurations["data"][0]
    _, out["subscription_schedule"], _ = raw("POST", "/v1/subscription_schedules", {"from_subscription": sub.id})
    _, events, _ = raw("GET", "/v1/events", {"limit": 1})
    out["event"] = events["data"][0]
    _, out["webhook_endpoint"], _ = raw("POST", "/v1/webhook_endpoints",
                                        [("url", "http://127.0.0.1:9/hook"), ("enabled_events[]", "*")])
    emulator.flush()
    # Objects inside delivered events have the same shape as API answers.
    for event in receiver.events():
        obj = event["data"]["object"]
        out.setdefault("event_object:" + obj["object"], obj)
    return out


@pytest.mark.parametrize("object_type", sorted(CLASSES))
def test_every_declared_field_is_present(objects_by_type, object_type):
    """Every field, at every depth, with declared enum values and ``ListObject``'s fields only."""
    obj = objects_by_type[object_type]
    cls = CLASSES[object_type]
    assert obj["object"] == cls.OBJECT_NAME
    problems = shape_problems(cls, obj)
    assert not problems, f"{object_type} departs from stripe {stripe.VERSION}: {problems}"


def test_event_payload_objects_are_complete(objects_by_type):
    checked = 0
    by_name = {cls.OBJECT_NAME: cls for cls in CLASSES.values()}
    for key, obj in objects_by_type.items():
        if key.startswith("event_object:"):
            problems = shape_problems(by_name[obj["object"]], obj)
            assert not problems, f"{key}: {problems}"
            checked += 1
    assert checked >= 5


def test_shape_check_sees_nested_gaps():
    # Sanity: the walk reaches nested objects and embedded lists, and flags total_count.
    config = {"features": {"subscription_pause": {"enabled": False}}}
    problems = shape_problems(stripe.billing_portal.Configuration, config)
    assert "features.subscription_pause.duration: missing" in problems
    inv = {"lines": {"object": "list", "data": [], "has_more": False, "url": "/v1/x", "total_count": 0}}
    assert any(p.startswith("lines: list fields") for p in shape_problems(stripe.Invoice, inv))


def test_endive_shapes(objects_by_type):
    sub = objects_by_type["subscription"]
    assert "current_period_end" not in sub and "current_period_start" not in sub
    item = sub["items"]["data"][0]
    assert item["current_period_start"] < item["current_period_end"]
    inv = objects_by_type["invoice"]
    assert "subscription" not in inv and "paid" not in inv and "payment_intent" not in inv
    assert inv["parent"]["type"] == "subscription_details"
    assert inv["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert inv["payments"]["data"][0]["payment"]["payment_intent"].startswith("pi_")
    assert objects_by_type["checkout.session"]["ui_mode"] == "hosted_page"
    assert objects_by_type["event"]["api_version"] == "2026-10-28.endive"
    assert objects_by_type["webhook_endpoint"]["secret"].startswith("whsec_")
    assert inv["hosted_invoice_url"] and inv["invoice_pdf"]


def test_library_parses_objects_into_its_classes(emulator, client):
    sub = subscribe(emulator, client)
    assert isinstance(sub, stripe.Subscription)
    assert isinstance(sub["items"].data[0], stripe.SubscriptionItem)
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert isinstance(inv, stripe.Invoice)
    assert isinstance(inv.lines.data[0], stripe.InvoiceLineItem)
    assert sys.modules["stripe"].VERSION == "16.1.0"
