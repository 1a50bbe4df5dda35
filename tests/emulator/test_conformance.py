"""The emulator answers in the shapes stripe-python 16.1.0 declares, and accepts and refuses what it declares.

Everything comes from the library itself: response shapes from its resource classes' annotations
(``library_shapes``: every declared field, nested objects and list items included, enums, embedded
lists), ``expand[]`` paths from its ``ExpandableField`` annotations, request parameters from its params
TypedDicts (``stripe_emulator.declared``). Upgrading stripe makes these tests fail until the emulator
follows. ``deleted`` is the one exception: Stripe only sends it (as ``true``) on deleted objects.
"""

from __future__ import annotations

import re
import sys
import typing

import pytest
import stripe
from emulator_helpers import subscribe
from library_shapes import declared, expandable_paths, shape_problems

from stripe_emulator import declared as declared_params
from stripe_emulator import errors as stripe_emulator_errors
from stripe_emulator.server import create_app

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
    assert not any(
        "ClassVar" in repr(v) for v in typing.get_type_hints(stripe.StripeObject).values() if False
    )  # get_type_hints works on the base; classes use string annotations


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
    _, out["billing_portal.session"], _ = raw(
        "POST", "/v1/billing_portal/sessions", {"customer": sub.customer, "return_url": "http://127.0.0.1:9/account"}
    )
    _, configurations, _ = raw("GET", "/v1/billing_portal/configurations")
    out["billing_portal.configuration"] = configurations["data"][0]
    _, out["subscription_schedule"], _ = raw("POST", "/v1/subscription_schedules", {"from_subscription": sub.id})
    _, events, _ = raw("GET", "/v1/events", {"limit": 1})
    out["event"] = events["data"][0]
    _, out["webhook_endpoint"], _ = raw(
        "POST", "/v1/webhook_endpoints", [("url", "http://127.0.0.1:9/hook"), ("enabled_events[]", "*")]
    )
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
    # Sanity: the walk reaches nested objects and embedded lists, and flags an embedded list without total_count.
    config = {"features": {"subscription_pause": {"enabled": False}}}
    problems = shape_problems(stripe.billing_portal.Configuration, config)
    assert "features.subscription_pause.duration: missing" in problems
    inv = {"lines": {"object": "list", "data": [], "has_more": False, "url": "/v1/x"}}
    assert any(p.startswith("lines: list fields") for p in shape_problems(stripe.Invoice, inv))
    inv["lines"]["total_count"] = 0
    assert not any(p.startswith("lines:") for p in shape_problems(stripe.Invoice, inv))


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


# ---------------------------------------------------------------------- requests
def served_operations() -> list[tuple[str, str]]:
    """Every (method, route) of ``/v1`` the emulator serves, from its own URL map."""
    app = create_app()
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


OPERATIONS = served_operations()
# Values tried, in order, until the library's declaration refuses one: an unknown enum value, a non-number,
# an object where a single value belongs, a list of them.
CANDIDATES = ("bogus_value_x", "not_a_number", {"bogus_key": "1"}, [{"bogus_key": "1"}])


def form_pairs(value, prefix: str) -> list[tuple[str, str]]:
    """Bracket notation, as stripe-python encodes parameters."""
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in form_pairs(v, f"{prefix}[{k}]")]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in form_pairs(v, f"{prefix}[{i}]")]
    return [(prefix, value)]


def nested(path: list, value):
    """``{"a": [{"b": value}]}`` for the path ``["a", 0, "b"]``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    return [nested(rest, value)] if head == 0 else {head: nested(rest, value)}


def parameter_paths(typed_dict, prefix: tuple = (), depth: int = 0):
    """Every declared parameter at the top level, and every enum below it (three levels deep)."""
    for key, tp in declared_params.fields(typed_dict).items():
        path = prefix + (key,)
        if not prefix or declared_params.literals(tp):
            yield path, tp
        if depth >= 2:
            continue
        for member in declared_params._members(tp):
            if declared_params.is_typeddict(member):
                yield from parameter_paths(member, path, depth + 1)
            elif typing.get_origin(member) is list and declared_params.is_typeddict(typing.get_args(member)[0]):
                yield from parameter_paths(typing.get_args(member)[0], path + (0,), depth + 1)


def planted(tp) -> object:
    """The first candidate the declaration of ``tp`` refuses, or None when it accepts anything."""
    for candidate in CANDIDATES:
        try:
            declared_params._check_value("p", tp, candidate)
        except stripe_emulator_errors.StripeError:
            return candidate
    return None


def bracket(path: tuple) -> str:
    return path[0] + "".join(f"[{p}]" for p in path[1:])


def test_every_served_operation_is_declared_by_the_library():
    undeclared = [op for op in OPERATIONS if declared_params.operation(*op) is None]
    assert not undeclared, f"served but not in stripe {stripe.VERSION}: {undeclared}"
    assert len(OPERATIONS) >= 50


@pytest.mark.parametrize("method, rule", OPERATIONS, ids=[f"{m} {r}" for m, r in OPERATIONS])
def test_one_planted_error_per_parameter_is_refused(raw, method, rule):
    """Each declared parameter with a wrong value (and one unknown parameter) answers Stripe's 400 naming it."""
    path = re.sub(r"<[^>]+>", "x_unknown", rule)
    status, body, _ = raw(method, path, [("bogus_param", "1")])
    assert status == 400 and body["error"]["param"] == "bogus_param", body
    assert body["error"]["code"] == "parameter_unknown"
    accepted = []
    for param_path, tp in parameter_paths(declared_params.operation(method, rule)):
        value = planted(tp)
        if value is None:
            continue
        pairs = form_pairs(nested(list(param_path[1:]), value), param_path[0])
        status, body, _ = raw(method, path, pairs)
        error = body.get("error") or {}
        if (
            status != 400
            or error.get("type") != "invalid_request_error"
            or not (error.get("param") or "").startswith(bracket(param_path))
        ):
            accepted.append((bracket(param_path), value, status, error.get("param")))
    assert not accepted, f"{method} {rule} accepted or misnamed planted errors: {accepted[:10]}"


def test_valid_reads_are_accepted(emulator, client, raw):
    """Every served GET answers 200 for real objects, and its list or object matches the declaration."""
    sub = subscribe(emulator, client)
    cs = client.v1.checkout.sessions.list({"limit": 1}).data[0]
    sched = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    endpoint = client.v1.webhook_endpoints.create({"url": "http://127.0.0.1:9/h", "enabled_events": ["*"]})
    ids = {
        "pid": "prod_pro",
        "cid": sub.customer,
        "pmid": client.v1.payment_methods.list({"customer": sub.customer}).data[0].id,
        "cs_id": cs.id,
        "sub_id": sub.id,
        "sched_id": sched.id,
        "in_id": sub.latest_invoice,
        "bpc_id": "bpc_emulator_default",
        "evt_id": client.v1.events.list().data[0].id,
        "we_id": endpoint.id,
    }
    query = {"/v1/subscription_items": {"subscription": sub.id}, "/v1/customers/search": {"query": "email:'x@y.z'"}}
    for method, rule in OPERATIONS:
        if method != "GET":
            continue
        path = re.sub(r"<([^>]+)>", lambda m: ids[m.group(1)], rule)
        if rule.startswith("/v1/prices/"):
            path = "/v1/prices/price_pro_monthly"
        status, body, _ = raw("GET", path, query.get(rule))
        assert status == 200, (rule, body)
        assert body["object"] in ("list", "search_result") or not shape_problems(CLASSES[body["object"]], body), (
            rule,
            shape_problems(CLASSES[body["object"]], body),
        )


def test_every_emitted_event_type_is_declared(emulator, client, receiver):
    """Event names the emulator sends are among those a webhook endpoint may enable."""
    sub = subscribe(emulator, client)
    client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    client.v1.billing_portal.configurations.create({"features": {"invoice_history": {"enabled": True}}})
    emulator.advance(days=40)
    allowed = set(
        declared_params.literals(
            declared_params.fields(declared_params.operation("POST", "/v1/webhook_endpoints"))[
                "enabled_events"
            ].__args__[0]
        )
    )
    emitted = {e.type for e in client.v1.events.list({"limit": 100}).data}
    assert emitted and emitted <= allowed, emitted - allowed


def test_declared_expandable_paths_are_accepted(emulator, client, raw):
    """Every path the resource classes declare expandable is accepted; ids of objects the emulator does not
    keep (payment intents, charges, ...) are refused with a message saying so, never silently left."""
    sub = subscribe(emulator, client)
    cs = client.v1.checkout.sessions.list({"limit": 1}).data[0]
    targets = {
        f"/v1/invoices/{sub.latest_invoice}": stripe.Invoice,
        f"/v1/subscriptions/{sub.id}": stripe.Subscription,
        f"/v1/customers/{sub.customer}": stripe.Customer,
        f"/v1/checkout/sessions/{cs.id}": stripe.checkout.Session,
        "/v1/prices/price_pro_monthly": stripe.Price,
        "/v1/products/prod_pro": stripe.Product,
    }
    refused = []
    for url, cls in targets.items():
        for path in expandable_paths(cls) + INCLUDABLE.get(cls, []):
            status, body, _ = raw("GET", url, [("expand[]", path)])
            message = (body.get("error") or {}).get("message", "")
            if status != 200 and "does not keep the object" not in message:
                refused.append((cls.__name__, path, message))
    assert not refused, refused


# Fields Stripe includes only when expanded (the library types them as plain optional fields).
INCLUDABLE = {
    stripe.checkout.Session: ["line_items", "total_details.breakdown", "line_items.data.discounts"],
    stripe.Customer: ["subscriptions"],
}
