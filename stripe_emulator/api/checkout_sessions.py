"""Checkout Sessions (subscription mode): create, retrieve, list, line items, expire.

Paying one is the hosted page's job (``pages``) or the control API's (``control``); both go
through the billing engine.
"""

from __future__ import annotations

import copy
import secrets

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..errors import StripeError, invalid, missing_param, no_such
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params
from ..plumbing import api, engine, includable, store
from ..store import Store, new_id

bp = Blueprint("checkout_sessions", __name__)


@includable("checkout.session", "line_items")
def line_items(s: Store, cs: dict) -> dict:
    """``expand[]=line_items`` on a session: the items it was created with."""
    items = s.internal("line_items").get(cs["id"], [])
    return objects.list_object(copy.deepcopy(items), f"/v1/checkout/sessions/{cs['id']}/line_items")


@includable("checkout.session", "total_details.breakdown")
def total_details_breakdown(s: Store, total_details: dict) -> dict:
    """``expand[]=total_details.breakdown``: the discounts and taxes behind the totals, none here."""
    return {"discounts": [], "taxes": []}


def _line_item(i: int, li: Params) -> tuple[dict, int]:
    """``line_items[i]``: an active recurring price and a quantity, as (price, quantity)."""
    price_id = li.str("price")
    if price_id is None:
        if li.has("price_data"):
            raise invalid(f"line_items[{i}][price_data]", "The emulator supports line_items[][price] only.")
        raise missing_param(f"line_items[{i}][price]")
    price = store().get("prices", price_id)
    if price is None:
        raise no_such("price", price_id, param=f"line_items[{i}][price]", status=400)
    if not price["active"]:
        raise invalid(
            f"line_items[{i}][price]", "The price specified is inactive. This field only accepts active prices."
        )
    if price["type"] != "recurring":
        raise invalid(
            f"line_items[{i}][price]",
            "You must specify at least one recurring price in `subscription` mode when using prices.",
        )
    qty = li.int("quantity", minimum=1)
    if qty is None:
        raise missing_param(f"line_items[{i}][quantity]")
    li.ignore("adjustable_quantity", "tax_rates", "dynamic_tax_rates")
    li.done()
    return price, qty


def _line_items(p: Params) -> tuple[list, int, str]:
    """``line_items``: the stored line items, the total amount and the one currency they share."""
    lines = p.list_of_dicts("line_items", required=True)
    if not lines:
        raise missing_param("line_items")
    stored_lines: list[dict] = []
    amount, currency = 0, ""
    for i, li in enumerate(lines):
        price, qty = _line_item(i, li)
        if currency and price["currency"] != currency:
            raise invalid(f"line_items[{i}][price]", "All prices must use the same currency.")
        currency = price["currency"]
        amount += price["unit_amount"] * qty
        prod = store().must("products", price["product"])
        stored_lines.append(objects.checkout_line_item(new_id("li", 24), price, prod["name"], qty))
    return stored_lines, amount, currency


def _expires_at(p: Params, now: int) -> int:
    """``expires_at``: 30 minutes to 24 hours from now; 24 hours when not given."""
    expires_at = p.int("expires_at")
    if expires_at is None:
        return now + 86400
    if not (now + 1800 <= expires_at <= now + 86400):
        raise invalid(
            "expires_at",
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session creation.",
        )
    return expires_at


def _subscription_data(p: Params) -> dict:
    """``subscription_data``: what the subscription created on payment takes over (metadata, description)."""
    sub_data = p.dict("subscription_data")
    if not sub_data:
        return {}
    stored = {"metadata": sub_data.metadata() or {}, "description": sub_data.str("description")}
    for key in ("trial_period_days", "trial_end", "billing_cycle_anchor"):
        if sub_data.has(key):
            raise invalid(f"subscription_data[{key}]", f"subscription_data[{key}] is not supported by the emulator.")
    sub_data.ignore(
        "default_tax_rates",
        "application_fee_percent",
        "on_behalf_of",
        "transfer_data",
        "proration_behavior",
        "invoice_settings",
        "billing_mode",
        "trial_settings",
    )
    sub_data.done()
    return stored


def _customer(p: Params) -> tuple:
    """``customer`` (an existing one) or ``customer_email``, not both, as (customer id, email)."""
    customer = p.str("customer")
    email = p.str("customer_email")
    if customer and email:
        raise invalid("customer_email", "You may only specify one of these parameters: customer, customer_email.")
    if customer:
        get_or_404("customers", "customer", customer, param="customer", status=400)
    return customer, email


@api(bp, "/v1/checkout/sessions", ["POST"])
def create_checkout_session(p: Params, ctx: Ctx):
    """A subscription-mode session over recurring prices; paid on its hosted page or through the control API."""
    s = store()
    mode = p.str("mode", required=True, choices=["payment", "setup", "subscription"])
    if mode != "subscription":
        raise invalid("mode", "The emulator supports Checkout Sessions in subscription mode only.")
    ui_mode = p.str("ui_mode", choices=["hosted_page", "embedded_page", "elements", "hosted", "embedded", "custom"])
    if ui_mode not in (None, "hosted_page", "hosted"):
        raise invalid("ui_mode", "The emulator supports ui_mode=hosted_page only.")
    customer, email = _customer(p)
    stored_lines, amount, currency = _line_items(p)
    success_url = p.str("success_url")
    cancel_url = p.str("cancel_url")
    for key, url in (("success_url", success_url), ("cancel_url", cancel_url)):
        if url is not None and not (url.startswith("http://") or url.startswith("https://")):
            raise invalid(key, "Not a valid URL")
    now = s.now()
    expires_at = _expires_at(p, now)
    stored_sub = _subscription_data(p)
    cs_id = "cs_test_" + secrets.token_urlsafe(45).replace("-", "a").replace("_", "b")[:58]
    cs = objects.checkout_session(
        cs_id,
        now,
        url=f"/c/pay/{cs_id}",  # served on the current public URL (objects.public_urls)
        success_url=success_url,
        cancel_url=cancel_url,
        customer_id=customer,
        customer_email=email,
        client_reference_id=p.str("client_reference_id"),
        metadata=p.metadata() or {},
        amount=amount,
        currency=currency or "usd",
        allow_promotion_codes=p.bool("allow_promotion_codes"),
        expires_at=expires_at,
        locale=p.str("locale"),
    )
    for key in ("billing_address_collection", "customer_creation", "payment_method_collection", "submit_type"):
        if p.has(key):
            cs[key] = p.str(key)
    p.ignore(
        "automatic_tax",
        "consent_collection",
        "custom_fields",
        "custom_text",
        "customer_update",
        "discounts",
        "invoice_creation",
        "payment_method_types",
        "payment_method_options",
        "phone_number_collection",
        "tax_id_collection",
        "saved_payment_method_options",
        "payment_method_configuration",
        "shipping_address_collection",
        "after_expiration",
        "adaptive_pricing",
        "branding_settings",
        "origin_context",
        "wallet_options",
        "name_collection",
        "optional_items",
        "permissions",
        "currency",
    )
    p.done()
    s.put("checkout_sessions", cs)
    s.internal("line_items")[cs_id] = stored_lines
    s.internal("sub_data")[cs_id] = stored_sub
    return cs


@api(bp, "/v1/checkout/sessions", ["GET"])
def list_checkout_sessions(p: Params, ctx: Ctx):
    """Sessions newest first, filtered by customer, subscription, status."""
    items = newest_first(store().coll("checkout_sessions"))
    for key in ("customer", "subscription", "status", "payment_intent", "payment_link"):
        value = p.str(key)
        if value:
            items = [o for o in items if o.get(key) == value]
    items = created_filter(p, items)
    p.ignore("customer_details")
    p.done()
    return paginate(items, p, "/v1/checkout/sessions")


@api(bp, "/v1/checkout/sessions/<cs_id>", ["GET"])
def retrieve_checkout_session(p: Params, ctx: Ctx, cs_id: str):
    """One session; ``expand[]=line_items`` adds its items."""
    p.done()
    return get_or_404("checkout_sessions", "checkout.session", cs_id)


@api(bp, "/v1/checkout/sessions/<cs_id>/line_items", ["GET"])
def list_checkout_line_items(p: Params, ctx: Ctx, cs_id: str):
    """The items the session was created with."""
    cs = get_or_404("checkout_sessions", "checkout.session", cs_id)
    items = store().internal("line_items").get(cs["id"], [])
    p.done()
    return paginate(list(items), p, f"/v1/checkout/sessions/{cs_id}/line_items")


@api(bp, "/v1/checkout/sessions/<cs_id>/expire", ["POST"])
def expire_checkout_session(p: Params, ctx: Ctx, cs_id: str):
    """Only an open session can expire; Stripe names the status it found otherwise."""
    cs = get_or_404("checkout_sessions", "checkout.session", cs_id)
    p.done()
    if cs["status"] != "open":
        raise StripeError(
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout '
            f'Session has a status of "{cs["status"]}".',
            code="checkout_session_expired" if cs["status"] == "expired" else None,
            param="session",
        )
    return engine().expire_checkout(ctx, cs)
