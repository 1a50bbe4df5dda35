"""`GET {API_PREFIX}/openapi.json`: the JSON API described as an OpenAPI 3.1 document, written by hand.

Kept true by tests/api/test_openapi.py: every route under API_PREFIX must be documented with its methods (and
nothing else), and the responses of real calls must validate against the schemas below.
"""
from __future__ import annotations

from typing import Any

from flask import current_app, jsonify

from app.api import bp
from app.services.backtesting import MAX_WINDOW
from app.services.strategies import NAME_MAX, RULES_PATTERN, TEXT_MAX


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def response(description: str, schema_name: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref(schema_name))}


def error(description: str) -> dict[str, Any]:
    return response(description, "Error")


def shared(name: str) -> dict[str, str]:
    """One of the shared responses of `components.responses`."""
    return {"$ref": f"#/components/responses/{name}"}


def body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": json_content(ref(schema_name))}


BEARER = [{"bearerAuth": []}]
PLAN_NAME = {"type": "string", "enum": ["starter", "pro"], "description": "A paid plan (`free` is refused)."}
BILLING_CYCLE = {"type": "string", "enum": ["monthly", "yearly"]}
NULLABLE_DATETIME = {"type": ["string", "null"], "format": "date-time"}
NON_BLANK = {"type": "string", "minLength": 1, "pattern": "\\S", "description": "Not empty, not only spaces."}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "Every error of the API: a stable code for programs and a sentence for people.",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "examples": ["invalid_request", "billing_unavailable"]},
            "message": {"type": "string"},
        },
    },
    "UpgradeRequired": {
        "type": "object",
        "description": "403: the plan does not include the feature, or the action would pass a limit.",
        "required": ["error", "message", "feature", "required_plan"],
        "properties": {
            "error": {"const": "upgrade_required"},
            "message": {"type": "string"},
            "feature": {"type": "string", "examples": ["api_access", "strategies_max"]},
            "required_plan": {"type": ["string", "null"], "description": "The cheapest plan that allows it."},
        },
    },
    "TokenRequest": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {"email": {"type": "string", "format": "email", "maxLength": 320},
                       "password": {**NON_BLANK, "maxLength": 128}},
    },
    "TokenPair": {
        "type": "object",
        "required": ["access_token", "refresh_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "refresh_token": {"type": "string"},
            "token_type": {"const": "bearer"},
            "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds the access token is valid."},
        },
    },
    "Me": {
        "type": "object",
        "required": ["id", "email"],
        "properties": {"id": {"type": "integer"}, "email": {"type": "string", "format": "email"}},
    },
    "Subscription": {
        "type": "object",
        "description": "The user's plan; Free users get `plan: \"free\"` and nulls.",
        "required": ["plan", "billing_cycle", "status", "current_period_end", "cancel_at_period_end", "features"],
        "properties": {
            "plan": {"type": "string", "enum": ["free", "starter", "pro"]},
            "billing_cycle": {"type": ["string", "null"], "enum": ["monthly", "yearly", None]},
            "status": {"type": ["string", "null"], "enum": ["active", "trialing", "past_due", "incomplete",
                                                            "incomplete_expired", "unpaid", "canceled",
                                                            "paused", None]},
            "current_period_end": NULLABLE_DATETIME,
            "cancel_at_period_end": {"type": "boolean"},
            "features": {
                "type": "object",
                "description": "Included features: `true`, a limit, or `null` for unlimited.",
                "additionalProperties": {"type": ["boolean", "integer", "null"]},
            },
        },
    },
    "CheckoutRequest": {
        "type": "object",
        "required": ["plan_name", "billing_cycle"],
        "properties": {"plan_name": PLAN_NAME, "billing_cycle": BILLING_CYCLE},
    },
    "CheckoutSession": {
        "type": "object",
        "required": ["checkout_url", "session_id"],
        "properties": {
            "checkout_url": {"type": "string", "format": "uri", "description": "Send the person here to pay."},
            "session_id": {"type": "string", "pattern": "^cs_"},
        },
    },
    "PortalSession": {
        "type": "object",
        "required": ["portal_url"],
        "properties": {"portal_url": {"type": "string", "format": "uri"}},
    },
    "PlanChangeRequest": {
        "type": "object",
        "required": ["plan_name", "billing_cycle"],
        "properties": {
            "plan_name": PLAN_NAME,
            "billing_cycle": BILLING_CYCLE,
            "preview": {"type": "boolean", "default": False, "description": "Only price the change."},
        },
    },
    "PlanChange": {
        "type": "object",
        "description": "An upgrade takes effect now (prorations invoiced at once); a downgrade at period end.",
        "required": ["plan", "billing_cycle", "kind", "applied", "amount_due_now", "currency", "effective_at"],
        "properties": {
            "plan": {"type": "string", "enum": ["starter", "pro"]},
            "billing_cycle": BILLING_CYCLE,
            "kind": {"type": "string", "enum": ["upgrade", "downgrade"]},
            "applied": {"type": "boolean"},
            "amount_due_now": {"type": "integer", "description": "Cents, charged now (0 for a downgrade)."},
            "currency": {"type": "string", "examples": ["usd"]},
            "effective_at": {**NULLABLE_DATETIME, "description": "When a downgrade happens; null: now."},
        },
    },
    "StrategyInput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {**NON_BLANK, "maxLength": NAME_MAX},
                       "description": {"type": "string", "maxLength": TEXT_MAX},
                       "rules": {
                           "type": "string", "maxLength": TEXT_MAX, "pattern": RULES_PATTERN,
                           "format": "strategy-rules",
                           "description": "The crossover's two moving-average windows in trading days: "
                                          "`fast=<days> slow=<days>`, either order, any case, `=` or `:`, "
                                          "separated by spaces, new lines, commas or semicolons, with "
                                          f"1 ≤ fast < slow ≤ {MAX_WINDOW} (the one condition the pattern "
                                          "cannot say). Empty or left out: `fast=20 slow=50`. Anything else "
                                          "is refused with 400 `invalid_rules`, never replaced by a default.",
                           "examples": ["fast=20 slow=50", "slow: 200, fast: 50"],
                       }},
    },
    "Strategy": {
        "type": "object",
        "required": ["id", "name", "description", "rules", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "rules": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "StrategyList": {
        "type": "object",
        "required": ["strategies"],
        "properties": {"strategies": {"type": "array", "items": ref("Strategy")}},
    },
    "StripeEvent": {
        "type": "object",
        "description": "A Stripe Event, verified against the raw body; never re-serialised.",
        "required": ["id", "type", "data"],
        "properties": {"id": {"type": "string", "pattern": "^evt_"}, "type": {"type": "string"},
                       "data": {"type": "object"}},
    },
    "WebhookReceipt": {
        "type": "object",
        "required": ["status", "event_id"],
        "properties": {"status": {"type": "string", "enum": ["processed", "ignored", "duplicate"]},
                       "event_id": {"type": "string"}},
    },
}

RESPONSES: dict[str, Any] = {
    "BadRequest": error("Bad input: not a JSON object, a missing or invalid field, an unknown plan or cycle."),
    "Unauthorized": error("Missing, forged or expired token (`authorization_required`, `invalid_token`, "
                          "`token_expired`)."),
    "TooManyRequests": {
        "description": "Rate limited (billing: RATELIMIT_BILLING per user, default 10 per minute).",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
        "content": json_content(ref("Error")),
    },
    "BillingUnavailable": error("Stripe could not be reached (`billing_unavailable`); nothing was charged or "
                                "written — try again."),
    "BillingFailed": error("Stripe refused the request (`billing_request_failed`); nothing was charged."),
    "UpgradeRequired": response("The plan does not include this (`upgrade_required`).", "UpgradeRequired"),
}

BILLING_ERRORS = {"401": shared("Unauthorized"), "429": shared("TooManyRequests"), "502": shared("BillingFailed"),
                  "503": shared("BillingUnavailable")}


def paths() -> dict[str, Any]:
    return {
        "/openapi.json": {"get": {
            "operationId": "getOpenapi", "summary": "This document.", "tags": ["meta"], "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": json_content({"type": "object"})}},
        }},
        "/auth/token": {"post": {
            "operationId": "issueToken", "summary": "Exchange email and password for a token pair.",
            "tags": ["auth"], "security": [], "requestBody": body("TokenRequest"),
            "responses": {"200": response("The tokens.", "TokenPair"), "400": shared("BadRequest"),
                          "401": error("Email or password is incorrect (`invalid_credentials`)."),
                          "429": shared("TooManyRequests")},
        }},
        "/auth/refresh": {"post": {
            "operationId": "refreshToken", "summary": "A new token pair; send the *refresh* token as bearer.",
            "tags": ["auth"], "security": BEARER,
            "responses": {"200": response("The new tokens.", "TokenPair"), "401": shared("Unauthorized")},
        }},
        "/me": {"get": {
            "operationId": "showMe", "summary": "Who the token belongs to.", "tags": ["auth"], "security": BEARER,
            "responses": {"200": response("The user.", "Me"), "401": shared("Unauthorized")},
        }},
        "/billing/checkout": {"post": {
            "operationId": "createCheckout", "summary": "Start Stripe Checkout for a paid plan (users on Free).",
            "tags": ["billing"], "security": BEARER, "requestBody": body("CheckoutRequest"),
            "responses": {
                "200": response("Open `checkout_url` in a browser to pay.", "CheckoutSession"),
                "400": shared("BadRequest"),
                "409": error("Already on that plan and cycle (`already_on_plan`), or already paying for another "
                             "plan (`plan_change_required`: use /billing/change-plan)."),
                **BILLING_ERRORS,
            },
        }},
        "/billing/portal": {"post": {
            "operationId": "createPortal", "summary": "A Stripe Customer Portal URL (cards, invoices, cancel).",
            "tags": ["billing"], "security": BEARER,
            "responses": {
                "200": response("Open `portal_url` in a browser.", "PortalSession"),
                "400": error("No billing account yet (`no_billing_account`): choose a paid plan first."),
                **BILLING_ERRORS,
            },
        }},
        "/billing/change-plan": {"post": {
            "operationId": "changePlan",
            "summary": "Change a paying user's plan on the existing subscription (never a second one).",
            "tags": ["billing"], "security": BEARER, "requestBody": body("PlanChangeRequest"),
            "responses": {
                "200": response("The change, applied or (with `preview`) only priced.", "PlanChange"),
                "400": error("Bad input, or no paid subscription (`no_subscription`)."),
                "402": error("The card was declined (`card_declined`); nothing changed."),
                "409": error("Already on that plan (`already_on_plan`) or the subscription is not active."),
                **BILLING_ERRORS,
            },
        }},
        "/billing/cancel": {"post": {
            "operationId": "cancelSubscription", "summary": "Cancel at period end; the plan stays until then.",
            "tags": ["billing"], "security": BEARER,
            "responses": {
                "200": response("The subscription, `cancel_at_period_end: true`.", "Subscription"),
                "400": error("No paid subscription (`no_subscription`)."),
                "409": error("The subscription has already ended (`subscription_ended`)."),
                **BILLING_ERRORS,
            },
        }},
        "/billing/resume": {"post": {
            "operationId": "resumeSubscription", "summary": "Undo a scheduled cancellation.",
            "tags": ["billing"], "security": BEARER,
            "responses": {
                "200": response("The subscription, renewing again.", "Subscription"),
                "400": error("No paid subscription (`no_subscription`)."),
                "409": error("Not set to cancel (`not_canceling`), or already ended."),
                **BILLING_ERRORS,
            },
        }},
        "/billing/subscription": {"get": {
            "operationId": "showSubscription", "summary": "The user's plan, status, period end and features.",
            "tags": ["billing"], "security": BEARER,
            "responses": {"200": response("The subscription.", "Subscription"), "401": shared("Unauthorized")},
        }},
        "/billing/webhooks/stripe": {"post": {
            "operationId": "receiveStripeEvent",
            "summary": "Stripe's webhook deliveries, verified by signature (for Stripe, not for API clients).",
            "tags": ["webhooks"], "security": [],
            "parameters": [{
                "name": "Stripe-Signature", "in": "header", "required": True,
                "description": "`t=<unix time>,v1=<HMAC-SHA256 hex>[,v1=…]` over `{t}.{raw body}`.",
                "schema": {"type": "string", "pattern": "^t=\\d+"},
            }],
            "requestBody": body("StripeEvent"),
            "responses": {
                "200": response("Recorded and applied, ignored, or a duplicate.", "WebhookReceipt"),
                "400": error("Missing or invalid signature, or not an event."),
                "500": error("A fault worth retrying: Stripe delivers the event again."),
            },
        }},
        "/strategies": {
            "get": {
                "operationId": "listStrategies", "summary": "The user's strategies, oldest first (Pro: api_access).",
                "tags": ["strategies"], "security": BEARER,
                "responses": {"200": response("The strategies.", "StrategyList"), "401": shared("Unauthorized"),
                              "403": shared("UpgradeRequired")},
            },
            "post": {
                "operationId": "createStrategy", "summary": "Create a strategy within the plan's `strategies_max`.",
                "tags": ["strategies"], "security": BEARER, "requestBody": body("StrategyInput"),
                "responses": {"201": response("The new strategy.", "Strategy"),
                              "400": error("Bad input: not a JSON object, a missing or invalid field "
                                           "(`invalid_json`, `missing_field`, `invalid_field`), or rules that "
                                           "cannot be read (`invalid_rules`, the message quoting them)."),
                              "401": shared("Unauthorized"), "403": shared("UpgradeRequired")},
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document; paths are relative to the server URL, which is API_PREFIX."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "Smart Strategies Builder API",
            "version": "1.0.0",
            "description": "Billing and strategies for API clients. Get a token pair from `POST /auth/token`, send "
                           "`Authorization: Bearer <access_token>`; every error is `{\"error\", \"message\"}` JSON.",
        },
        "servers": [{"url": current_app.config["API_PREFIX"]}],
        "security": BEARER,
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": SCHEMAS,
            "responses": RESPONSES,
        },
    }


@bp.get("/openapi.json")
def show_openapi():
    """The API's OpenAPI 3.1 description (no token needed)."""
    return jsonify(openapi_document())
