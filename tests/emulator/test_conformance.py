"""Every field stripe-python 16.1.0 declares on a resource class is in the emulator's JSON.

The field lists come from the library's own type annotations, so upgrading
stripe (which may add fields) makes this test fail until the emulator sends
them too. ``deleted`` is the one exception: Stripe only sends it (as
``true``) on deleted objects, never as ``null``.
"""

from __future__ import annotations

import sys
import typing

import pytest
import stripe

from emulator_helpers import subscribe

CLASSES = {
    "customer": stripe.Customer,
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "checkout.session": stripe.checkout.Session,
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

ONLY_WHEN_DELETED = {"deleted"}


def declared_fields(cls) -> set[str]:
    """Public, non-ClassVar annotated attributes of ``cls`` and its bases."""
    fields = set()
    for base in cls.__mro__:
        for name, annotation in base.__dict__.get("__annotations__", {}).items():
            if name.startswith("_"):
                continue
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if "ClassVar" in text:
                continue
            fields.add(name)
    return fields


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
    _, cust, _ = raw("GET", f"/v1/customers/{sub.customer}")
    out["customer"] = cust
    _, s, _ = raw("GET", f"/v1/subscriptions/{sub.id}")
    out["subscription"] = s
    out["subscription_item"] = s["items"]["data"][0]
    out["plan"] = s["items"]["data"][0]["plan"]
    _, sessions, _ = raw("GET", "/v1/checkout/sessions", {"limit": 1})
    out["checkout.session"] = sessions["data"][0]
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
    obj = objects_by_type[object_type]
    cls = CLASSES[object_type]
    assert obj["object"] == cls.OBJECT_NAME
    missing = sorted(declared_fields(cls) - ONLY_WHEN_DELETED - set(obj))
    assert not missing, f"{object_type} lacks fields declared by stripe {stripe.VERSION}: {missing}"


def test_event_payload_objects_are_complete(objects_by_type):
    checked = 0
    by_name = {cls.OBJECT_NAME: cls for cls in CLASSES.values()}
    for key, obj in objects_by_type.items():
        if key.startswith("event_object:"):
            cls = by_name[obj["object"]]
            missing = sorted(declared_fields(cls) - ONLY_WHEN_DELETED - set(obj))
            assert not missing, f"{key} lacks {missing}"
            checked += 1
    assert checked >= 5


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
