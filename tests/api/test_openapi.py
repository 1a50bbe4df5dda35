"""The OpenAPI document at {API_PREFIX}/openapi.json is true: every API route is in it with its methods (and
nothing else), it is well-formed OpenAPI 3.1 / JSON Schema 2020-12, and real answers validate against it."""

from __future__ import annotations

import json
import re

from jsonschema import Draft202012Validator

from app.services.catalog import PLAN_CATALOG
from app.services.metrics import PLAN_CHANGE_DIRECTIONS
from tests.api.conftest import PREFIX
from tests.webhooks.signing import sign

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def openapi_path(rule: str) -> str:
    """`/api/v1/strategies/<int:id>` → `/strategies/{id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule[len(PREFIX) :])


def test_every_api_route_is_documented_with_its_methods_and_nothing_else(app, contract):
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule == PREFIX or rule.rule.startswith(PREFIX + "/"):
            served.setdefault(openapi_path(rule.rule), set()).update(m.lower() for m in rule.methods - IGNORED_METHODS)
    documented = {path: {m for m in item if m in HTTP_METHODS} for path, item in contract.document["paths"].items()}
    assert documented == served
    for path in (
        "/auth/token",
        "/auth/refresh",
        "/me",
        "/billing/checkout",
        "/billing/portal",
        "/billing/change-plan",
        "/billing/cancel",
        "/billing/resume",
        "/billing/subscription",
        "/billing/webhooks/stripe",
        "/strategies",
        "/openapi.json",
    ):
        assert path in documented


def test_the_document_is_well_formed(app, contract):
    document = contract.document
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": app.config["API_PREFIX"]}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    schemas = document["components"]["schemas"]
    for name in (
        "Error",
        "UpgradeRequired",
        "TokenPair",
        "Subscription",
        "CheckoutSession",
        "PortalSession",
        "PlanChange",
        "Strategy",
    ):
        assert name in schemas
    assert schemas["Error"]["required"] == ["error", "message"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)

    # Every $ref points at something that exists.
    text = json.dumps(document)
    for target in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = document
        for part in target.split("/"):
            assert part in node, f"dangling $ref #/{target}"
            node = node[part]

    operation_ids = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            operation_ids.append(operation["operationId"])
            assert operation["responses"], (method, path)
            assert operation.get("summary"), (method, path)
    assert len(operation_ids) == len(set(operation_ids))

    webhook = document["paths"]["/billing/webhooks/stripe"]["post"]
    assert webhook["security"] == []
    [signature] = webhook["parameters"]
    assert (signature["name"], signature["in"], signature["required"]) == ("Stripe-Signature", "header", True)
    assert document["paths"]["/auth/token"]["post"]["security"] == []
    assert document["paths"]["/me"]["get"]["security"] == [{"bearerAuth": []}]


def test_the_plan_names_are_the_catalogs(contract):
    """Generated from the models, whose plan names come from the catalog's definitions (not a list of their own)."""
    plans = sorted(PLAN_CATALOG, key=lambda spec: spec.sort_order)
    paid = [spec.name for spec in plans if spec.price_monthly > 0]
    schemas = contract.document["components"]["schemas"]
    assert schemas["CheckoutRequest"]["properties"]["plan_name"]["enum"] == paid
    assert schemas["PlanChangeRequest"]["properties"]["plan_name"]["enum"] == paid
    assert schemas["PlanChange"]["properties"]["plan"]["enum"] == paid
    assert schemas["Subscription"]["properties"]["plan"]["enum"] == [spec.name for spec in plans]


def test_the_plan_change_kinds_are_the_directions_of_the_plan_change_counter(contract):
    """The API's `kind` and the counter's `direction` come from one rule (sync.plan_change_direction)."""
    kind = contract.document["components"]["schemas"]["PlanChange"]["properties"]["kind"]
    assert kind["enum"] == list(PLAN_CHANGE_DIRECTIONS)
    assert "cycle_change" in kind["description"]


def test_real_answers_validate_against_the_document(api, stripe_emulator, webhooks_to_app):
    """One tour of the API; `api` validates every answer's status and body against the document."""
    token = api.user("tour@example.com")
    refresh = api.post("/auth/token", json={"email": "tour@example.com", "password": "correct horse"}).get_json()
    api.post("/auth/refresh", refresh["refresh_token"])
    api.post("/auth/token", json={"email": "tour@example.com", "password": "wrong"})
    api.post("/auth/token", data="nope", content_type="application/json")
    api.get("/me", token)
    api.get("/me")
    api.get("/openapi.json")
    assert api.get("/billing/subscription", token).get_json()["plan"] == "free"
    assert api.get("/strategies", token).status_code == 403  # UpgradeRequired
    api.post("/billing/portal", token)  # 400 no_billing_account
    api.post("/billing/cancel", token)  # 400 no_subscription
    api.post("/billing/checkout", token, json={"plan_name": "gold", "billing_cycle": "monthly"})

    checkout = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"}).get_json()
    stripe_emulator.complete_checkout(checkout["session_id"])
    stripe_emulator.flush()
    assert api.get("/billing/subscription", token).get_json()["plan"] == "pro"
    api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})  # 409
    api.post("/billing/portal", token)
    api.post("/billing/change-plan", token, json={"plan_name": "starter", "billing_cycle": "monthly", "preview": True})
    api.post("/billing/cancel", token)
    api.post("/billing/resume", token)
    api.post("/billing/resume", token)  # 409 not_canceling
    api.post("/strategies", token, json={"name": "Golden cross", "rules": "sma(50) > sma(200)"})
    api.post("/strategies", token, json={})  # 400
    api.get("/strategies", token)

    # The webhook endpoint: a bad signature, and a signed event of a type the app does not handle.
    secret = api.app.config["STRIPE_WEBHOOK_SECRET"].split(",")[0]
    body = json.dumps(
        {
            "id": "evt_openapi_tour",
            "object": "event",
            "type": "ping.tested",
            "created": 1,
            "data": {"object": {}},
            "livemode": False,
            "api_version": "2026-10-28.endive",
        }
    ).encode()
    api.post(
        "/billing/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": "t=1,v1=00"},
    )
    api.post(
        "/billing/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": sign(body, secret)},
    )

    statuses = {(method, path): set() for method, path, _ in api.checked}
    for method, path, status in api.checked:
        statuses[(method, path)].add(status)
    assert statuses[("POST", "/billing/webhooks/stripe")] == {200, 400}
    assert statuses[("POST", "/billing/checkout")] == {200, 400, 409}
    assert statuses[("GET", "/strategies")] == {200, 403}
    assert {path for _, path, _ in api.checked} == set(api.contract.document["paths"])
