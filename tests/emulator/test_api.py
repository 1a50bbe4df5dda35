"""Stripe's request semantics: auth, errors naming the param, Idempotency-Key, lists, expand, catalog."""

from __future__ import annotations

import pytest
import stripe
from emulator_helpers import new_checkout, subscribe


def test_catalog_is_seeded(client):
    prices = client.v1.prices.list(
        params={"lookup_keys": ["starter_monthly", "starter_yearly", "pro_monthly", "pro_yearly", "free_monthly"]}
    )
    by_id = {p.id: p for p in prices.data}
    assert {k: (v.unit_amount, v.recurring.interval, v.lookup_key) for k, v in by_id.items()} == {
        "price_free_monthly": (0, "month", "free_monthly"),
        "price_starter_monthly": (1999, "month", "starter_monthly"),
        "price_starter_yearly": (19999, "year", "starter_yearly"),
        "price_pro_monthly": (4999, "month", "pro_monthly"),
        "price_pro_yearly": (47999, "year", "pro_yearly"),
    }
    assert by_id["price_pro_yearly"].metadata.to_dict() == {"plan": "pro", "billing_cycle": "yearly"}
    products = client.v1.products.list()
    assert {p.id: (p.name, p.metadata["plan"]) for p in products.data} == {
        "prod_free": ("Free Plan", "free"),
        "prod_starter": ("Starter Plan", "starter"),
        "prod_pro": ("Pro Plan", "pro"),
    }
    expanded = client.v1.prices.list({"lookup_keys": ["pro_monthly"], "expand": ["data.product"]})
    assert expanded.data[0].product.name == "Pro Plan"


def test_auth(emulator):
    bad = stripe.StripeClient("sk_live_nope", base_addresses={"api": emulator.url})
    with pytest.raises(stripe.AuthenticationError) as exc:
        bad.v1.customers.list()
    assert exc.value.http_status == 401
    assert exc.value.json_body["error"]["type"] == "invalid_request_error"


def test_idempotency_replay_returns_the_identical_object(client, raw):
    first = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "customer-create-7"})
    again = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": "customer-create-7"})
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert len(client.v1.customers.list().data) == 1
    status1, body1, h1 = raw("POST", "/v1/customers", {"email": "b@example.com"}, {"Idempotency-Key": "k2"})
    status2, body2, h2 = raw("POST", "/v1/customers", {"email": "b@example.com"}, {"Idempotency-Key": "k2"})
    assert (status1, body1) == (status2, body2) and h2.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create({"email": "other@example.com"}, {"idempotency_key": "customer-create-7"})
    assert exc.value.http_status == 400


def test_idempotent_checkout_session(client):
    params = {
        "mode": "subscription",
        "line_items": [{"price": "price_pro_monthly", "quantity": 1}],
        "success_url": "http://127.0.0.1:9/s",
        "customer_email": "x@example.com",
    }
    a = client.v1.checkout.sessions.create(params, {"idempotency_key": "checkout-1"})
    b = client.v1.checkout.sessions.create(params, {"idempotency_key": "checkout-1"})
    assert a.id == b.id and a.url == b.url


@pytest.mark.parametrize(
    "call, status, param, code",
    [
        (lambda c: c.v1.customers.retrieve("cus_missing"), 404, "id", "resource_missing"),
        (lambda c: c.v1.subscriptions.retrieve("sub_missing"), 404, "id", "resource_missing"),
        (lambda c: c.v1.invoices.retrieve("in_missing"), 404, "id", "resource_missing"),
        (lambda c: c.v1.checkout.sessions.retrieve("cs_test_missing"), 404, "id", "resource_missing"),
        (lambda c: c.v1.events.retrieve("evt_missing"), 404, "id", "resource_missing"),
        (
            lambda c: c.v1.checkout.sessions.create({"line_items": [{"price": "price_pro_monthly", "quantity": 1}]}),
            400,
            "mode",
            "parameter_missing",
        ),
        (
            lambda c: c.v1.checkout.sessions.create({"mode": "subscription", "success_url": "http://x.test/s"}),
            400,
            "line_items",
            "parameter_missing",
        ),
        (
            lambda c: c.v1.checkout.sessions.create(
                {"mode": "subscription", "line_items": [{"price": "price_nope", "quantity": 1}]}
            ),
            400,
            "line_items[0][price]",
            "resource_missing",
        ),
        (
            lambda c: c.v1.checkout.sessions.create(
                {"mode": "subscription", "line_items": [{"price": "price_pro_monthly"}]}
            ),
            400,
            "line_items[0][quantity]",
            "parameter_missing",
        ),
        (lambda c: c.v1.checkout.sessions.create({"mode": "bogus"}), 400, "mode", "parameter_invalid"),
        (
            lambda c: c.v1.checkout.sessions.create(
                {
                    "mode": "subscription",
                    "customer": "cus_nope",
                    "line_items": [{"price": "price_pro_monthly", "quantity": 1}],
                }
            ),
            400,
            "customer",
            "resource_missing",
        ),
        (
            lambda c: c.v1.customers.create({"email": "a@example.com", "colour": "blue"}),
            400,
            "colour",
            "parameter_unknown",
        ),
        (lambda c: c.v1.customers.list({"limit": 1000}), 400, "limit", "parameter_invalid"),
        (lambda c: c.v1.subscriptions.list({"status": "sleeping"}), 400, "status", "parameter_invalid"),
        (
            lambda c: c.v1.billing_portal.sessions.create({"return_url": "http://x.test"}),
            400,
            "customer",
            "parameter_missing",
        ),
        (
            lambda c: c.v1.webhook_endpoints.create({"url": "http://x.test/hook"}),
            400,
            "enabled_events",
            "parameter_missing",
        ),
        (
            lambda c: c.v1.prices.create(
                {"currency": "usd", "unit_amount": 5, "product": "prod_pro", "lookup_key": "pro_monthly"}
            ),
            400,
            "lookup_key",
            "parameter_invalid",
        ),
        (lambda c: c.v1.customers.retrieve("cus_x", {"expand": ["nonsense"]}), 404, "id", "resource_missing"),
    ],
)
def test_errors_name_the_param(client, call, status, param, code):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        call(client)
    err = exc.value
    assert err.http_status == status
    assert err.param == param
    assert err.code == code
    assert set(err.json_body["error"]) >= {"type", "code", "message", "param"}


def test_subscription_update_errors(emulator, client):
    sub = subscribe(emulator, client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"items": [{"id": "si_nope", "price": "price_pro_monthly"}]})
    assert exc.value.param == "items[0][id]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub.id, {"proration_behavior": "sometimes"})
    assert exc.value.param == "proration_behavior"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.retrieve(sub.id, {"expand": ["nonsense"]})
    assert exc.value.param == "expand"


def test_unknown_route_and_card_error(emulator, client, raw):
    status, body, _ = raw("GET", "/v1/nothing_here")
    assert status == 404 and "Unrecognized request URL" in body["error"]["message"]
    cs = new_checkout(client)
    status, body, _ = raw("POST", f"/_emulator/checkout/{cs.id}/complete", {"card": "4000000000000002"})
    assert status == 402
    assert body["error"]["type"] == "card_error" and body["error"]["code"] == "card_declined"
    assert body["error"]["decline_code"] == "generic_decline"
    assert client.v1.checkout.sessions.retrieve(cs.id).status == "open"


def test_pagination(client):
    ids = [client.v1.customers.create({"email": f"p{i}@example.com"}).id for i in range(7)]
    page = client.v1.customers.list({"limit": 3})
    assert [c.id for c in page.data] == ids[::-1][:3] and page.has_more and page.url == "/v1/customers"
    page2 = client.v1.customers.list({"limit": 3, "starting_after": page.data[-1].id})
    assert [c.id for c in page2.data] == ids[::-1][3:6]
    assert [c.id for c in page.auto_paging_iter()] == ids[::-1]
    by_email = client.v1.customers.list({"email": "p3@example.com"})
    assert [c.id for c in by_email.data] == [ids[3]]
    search = client.v1.customers.search({"query": "email:'p4@example.com'"})
    assert [c.id for c in search.data] == [ids[4]]


def test_expand_paths(emulator, client):
    sub = subscribe(emulator, client)
    s = client.v1.subscriptions.retrieve(
        sub.id,
        {
            "expand": [
                "customer",
                "latest_invoice",
                "default_payment_method",
                "customer.invoice_settings.default_payment_method",
            ]
        },
    )
    assert s.customer.email == "jenny@example.com"
    assert s.latest_invoice.status == "paid"
    assert s.default_payment_method.card.last4 == "4242"
    assert s.customer.invoice_settings.default_payment_method.card.brand == "visa"
    listed = client.v1.subscriptions.list({"customer": s.customer.id, "expand": ["data.latest_invoice"]})
    assert listed.data[0].latest_invoice.id == s.latest_invoice.id
    pms = client.v1.payment_methods.list({"customer": s.customer.id, "type": "card"})
    assert pms.data[0].card.last4 == "4242" and pms.data[0].customer == s.customer.id


def test_customer_update_emits_previous_attributes(emulator, client, receiver):
    cust = client.v1.customers.create({"email": "jennyrosen@example.com"})
    client.v1.customers.update(cust.id, {"email": "jenny.rosen@example.com", "metadata": {"user_id": "9"}})
    events = receiver.wait_for("customer.updated")
    updated = [e for e in events if e["type"] == "customer.updated"][0]
    assert updated["data"]["previous_attributes"] == {"email": "jennyrosen@example.com", "metadata": {"user_id": None}}


def test_products_and_prices_can_be_created(client):
    prod = client.v1.products.create({"name": "Team", "metadata": {"plan": "team"}})
    price = client.v1.prices.create(
        {
            "product": prod.id,
            "currency": "usd",
            "unit_amount": 9900,
            "recurring": {"interval": "month"},
            "lookup_key": "team_monthly",
        }
    )
    assert price.recurring.interval == "month" and price.lookup_key == "team_monthly"
    found = client.v1.prices.list({"lookup_keys": ["team_monthly"]})
    assert [p.id for p in found.data] == [price.id]
    assert prod.id in [p.id for p in client.v1.products.list({"limit": 100}).data]


def test_portal_session_flow_data(emulator, client):
    sub = subscribe(emulator, client)
    ps = client.v1.billing_portal.sessions.create(
        {
            "customer": sub.customer,
            "return_url": "http://127.0.0.1:9/account",
            "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}},
        }
    )
    assert ps.url.startswith(emulator.url + "/p/session/")
    assert ps.flow.type == "subscription_cancel" and ps.flow.subscription_cancel.subscription == sub.id
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing_portal.sessions.create(
            {
                "customer": sub.customer,
                "flow_data": {"type": "subscription_update", "subscription_update": {"subscription": "sub_nope"}},
            }
        )
    assert exc.value.param == "flow_data[subscription_update][subscription]"


def test_state_survives_restart(tmp_path):
    from stripe_emulator.testing import EmulatorServer

    path = str(tmp_path / "state.json")
    with EmulatorServer(state_path=path) as first:
        cust = first.client().v1.customers.create({"email": "keep@example.com"})
        first.advance(days=3)
        now = first.now()
    with EmulatorServer(state_path=path) as second:
        assert second.client().v1.customers.retrieve(cust.id).email == "keep@example.com"
        assert second.now() >= now
        second.call("POST", "/_emulator/reset")
        with pytest.raises(stripe.InvalidRequestError):
            second.client().v1.customers.retrieve(cust.id)
        assert second.client().v1.prices.retrieve("price_pro_monthly").unit_amount == 4999


def test_api_version_header(raw):
    status, _, headers = raw("GET", "/v1/account")
    assert status == 200 and headers["Stripe-Version"] == "2026-10-28.endive"
    status, body, _ = raw("GET", "/v1/account", headers={"Stripe-Version": "2026-10-28.endive"})
    assert status == 200 and body["object"] == "account"
    status, body, headers = raw("GET", "/v1/customers", headers={"Stripe-Version": "2024-06-20"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert "2026-10-28.endive" in body["error"]["message"] and "2024-06-20" in body["error"]["message"]
    status, body, _ = raw("GET", "/v1/customers", headers={"Stripe-Version": "1999-01-01"})
    assert status == 400 and body["error"]["message"] == "Invalid Stripe API version: 1999-01-01"


def test_account_and_product_features(client, raw):
    account = client.v1.accounts.retrieve_current()
    assert account.object == "account" and account.country == "US" and account.default_currency == "usd"
    features = client.v1.products.features.list("prod_pro")
    assert features.data == [] and features.has_more is False
    status, body, _ = raw("GET", "/v1/products/prod_nope/features")
    assert status == 404 and body["error"]["code"] == "resource_missing"


@pytest.mark.parametrize(
    "path, param, value",
    [
        ("/v1/checkout/sessions", "status", "bogus"),
        ("/v1/invoices", "status", "bogus"),
        ("/v1/subscriptions", "status", "bogus"),
        ("/v1/prices", "type", "bogus"),
    ],
)
def test_enum_query_parameters_are_checked(raw, path, param, value):
    status, body, _ = raw("GET", path, {param: value})
    assert status == 400 and body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error" and "must be one of" in body["error"]["message"]


def test_declared_expansions_of_the_reported_paths(emulator, client):
    sub = subscribe(emulator, client)
    inv = client.v1.invoices.retrieve(sub.latest_invoice, {"expand": ["discounts", "lines.data.discounts"]})
    assert inv.discounts == [] and inv.lines.data[0].discounts == []
    cs = client.v1.checkout.sessions.list({"limit": 1}).data[0]
    cs = client.v1.checkout.sessions.retrieve(
        cs.id, {"expand": ["total_details.breakdown", "line_items.data.discounts"]}
    )
    assert cs.total_details.breakdown.discounts == [] and cs.total_details.breakdown.taxes == []
    assert cs.line_items.data[0].discounts == []
