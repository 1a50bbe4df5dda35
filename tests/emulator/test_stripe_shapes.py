"""Shapes Stripe's examples show (tests/fixtures/stripe-docs, docs.stripe.com): ``total_count`` on lists embedded
in objects and none on a list endpoint's answer, the event envelope of a platform account's own events (no
``account``, no ``context``), and a Checkout Session's ``line_items`` only when expanded."""

from __future__ import annotations

import json
from pathlib import Path

from emulator_helpers import new_checkout, subscribe

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stripe-docs"
EMBEDDED = ["object", "data", "has_more", "total_count", "url"]  # in Stripe's order
TOP_LEVEL = {"object", "data", "has_more", "url"}


def assert_embedded(lst: dict, count: int) -> None:
    assert list(lst) == EMBEDDED, lst.keys()
    assert lst["object"] == "list" and lst["total_count"] == len(lst["data"]) == count and lst["has_more"] is False


def test_the_fixtures_show_total_count_on_embedded_lists():
    sub = json.loads((FIXTURES / "customer.subscription.created.json").read_text())["data"]["object"]
    inv = json.loads((FIXTURES / "invoice.paid.json").read_text())["data"]["object"]
    for lst in (sub["items"], inv["lines"], inv["payments"]):
        assert set(lst) == set(EMBEDDED)


def test_embedded_lists_carry_total_count_in_answers_and_events(emulator, client, raw, receiver):
    sub = subscribe(emulator, client, "price_starter_monthly")
    _, s, _ = raw("GET", f"/v1/subscriptions/{sub.id}")
    assert_embedded(s["items"], 1)
    _, inv, _ = raw("GET", f"/v1/invoices/{s['latest_invoice']}")
    assert_embedded(inv["lines"], 1)
    assert_embedded(inv["payments"], 1)
    # A list that changed after it was stored is counted as it is now: a swap to yearly bills at once (credit +
    # charge: two lines), an added price makes two items.
    client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "price": "price_starter_yearly"}, {"price": "price_pro_yearly"}],
            "proration_behavior": "always_invoice",
        },
    )
    _, s, _ = raw("GET", f"/v1/subscriptions/{sub.id}")
    assert_embedded(s["items"], 2)
    _, inv, _ = raw("GET", f"/v1/invoices/{s['latest_invoice']}")
    assert_embedded(inv["lines"], len(inv["lines"]["data"]))
    assert inv["lines"]["total_count"] >= 2
    # Inside a list endpoint's answer too, and with expand[].
    _, subs, _ = raw("GET", "/v1/subscriptions", [("customer", sub.customer), ("expand[]", "data.latest_invoice")])
    assert_embedded(subs["data"][0]["items"], 2)
    assert_embedded(subs["data"][0]["latest_invoice"]["lines"], inv["lines"]["total_count"])
    emulator.flush()
    by_type = {}
    for event in receiver.events():
        by_type.setdefault(event["type"], []).append(event)
    assert_embedded(by_type["customer.subscription.created"][0]["data"]["object"]["items"], 1)
    updated = by_type["customer.subscription.updated"][-1]["data"]
    assert_embedded(updated["object"]["items"], 2)
    assert_embedded(updated["previous_attributes"]["items"], 1)  # sent whole, as Stripe does
    paid = by_type["invoice.paid"][0]["data"]["object"]
    assert_embedded(paid["lines"], 1)
    assert_embedded(paid["payments"], 1)
    _, listed, _ = raw("GET", "/v1/events", {"type": "invoice.paid", "limit": 1})
    assert_embedded(
        listed["data"][0]["data"]["object"]["lines"], len(listed["data"][0]["data"]["object"]["lines"]["data"])
    )


def test_list_endpoints_answer_without_total_count(emulator, client, raw):
    sub = subscribe(emulator, client)
    cs = client.v1.checkout.sessions.list({"limit": 1}).data[0]
    for path, query in [
        ("/v1/customers", None),
        ("/v1/subscriptions", None),
        ("/v1/subscription_items", {"subscription": sub.id}),
        ("/v1/invoices", None),
        (f"/v1/invoices/{sub.latest_invoice}/lines", None),
        ("/v1/checkout/sessions", None),
        (f"/v1/checkout/sessions/{cs.id}/line_items", None),
        ("/v1/prices", None),
        ("/v1/events", None),
        ("/v1/payment_methods", {"customer": sub.customer}),
    ]:
        status, body, _ = raw("GET", path, query)
        assert status == 200, (path, body)
        assert set(body) == TOP_LEVEL and body["object"] == "list" and body["data"], (path, sorted(body))
        assert body["url"] == path, (path, body["url"])


def test_event_envelope_is_a_platform_accounts(emulator, client, raw, receiver):
    """No ``account`` (Connect only: the connected account an event comes from) and no ``context``: the envelope
    has the fixtures' keys exactly, on the wire and through the API."""
    subscribe(emulator, client)
    emulator.flush()
    envelope = set(json.loads((FIXTURES / "invoice.paid.json").read_text()))
    assert envelope == {
        "id",
        "object",
        "api_version",
        "created",
        "data",
        "livemode",
        "pending_webhooks",
        "request",
        "type",
    }
    delivered = receiver.events()
    assert delivered
    for event in delivered:
        assert set(event) == envelope, (event["type"], sorted(set(event) ^ envelope))
    _, listed, _ = raw("GET", "/v1/events", {"limit": 100})
    for event in listed["data"]:
        assert set(event) == envelope
    _, one, _ = raw("GET", f"/v1/events/{listed['data'][0]['id']}")
    assert set(one) == envelope


def test_checkout_session_line_items_only_when_expanded(emulator, client, raw, receiver):
    cs = new_checkout(client, "price_pro_monthly")
    _, created, _ = raw("GET", f"/v1/checkout/sessions/{cs.id}")
    assert "line_items" not in created
    assert "line_items" not in cs  # the create answer
    _, listed, _ = raw("GET", "/v1/checkout/sessions")
    assert all("line_items" not in s for s in listed["data"])
    _, expanded, _ = raw("GET", f"/v1/checkout/sessions/{cs.id}", [("expand[]", "line_items")])
    items = expanded["line_items"]
    assert_embedded(items, 1)
    assert items["url"] == f"/v1/checkout/sessions/{cs.id}/line_items"
    assert items["data"][0]["object"] == "item" and items["data"][0]["price"]["id"] == "price_pro_monthly"
    _, listed, _ = raw("GET", "/v1/checkout/sessions", [("expand[]", "data.line_items")])
    assert_embedded(listed["data"][0]["line_items"], 1)
    # Through the library: absent unless expanded.
    assert "line_items" not in client.v1.checkout.sessions.retrieve(cs.id)
    assert client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["line_items"]}).line_items.data[0].quantity == 1
    emulator.complete_checkout(cs.id, card="4242424242424242")
    emulator.flush()
    sessions = [e["data"]["object"] for e in receiver.events() if e["type"].startswith("checkout.session.")]
    assert sessions and all("line_items" not in s for s in sessions)


def test_subscription_items_list_pages_through_the_library(emulator, client):
    """``GET /v1/subscription_items`` answers Stripe's ``url`` (no filter in it); the library still pages with
    the ``subscription`` filter it keeps."""
    sub = subscribe(emulator, client, "price_starter_monthly")
    client.v1.subscriptions.update(
        sub.id,
        {"items": [{"id": sub["items"].data[0].id}, {"price": "price_pro_monthly"}], "proration_behavior": "none"},
    )
    page = client.v1.subscription_items.list({"subscription": sub.id, "limit": 1})
    assert page.url == "/v1/subscription_items" and page.has_more
    assert sorted(i.price.id for i in page.auto_paging_iter()) == ["price_pro_monthly", "price_starter_monthly"]
