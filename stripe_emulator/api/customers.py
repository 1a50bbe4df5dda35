"""Customers: create, retrieve, update, delete, list by email, search; a customer's payment methods
and, expanded, its subscriptions."""

from __future__ import annotations

import copy

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..errors import invalid, no_such
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, engine, includable, store
from ..store import Store

bp = Blueprint("customers", __name__)


@includable("customer", "subscriptions")
def customer_subscriptions(s: Store, cust: dict) -> dict:
    """``expand[]=subscriptions`` on a customer: its subscriptions that are not canceled, newest first."""
    subs = [
        x
        for x in reversed(list(s.coll("subscriptions").values()))
        if x["customer"] == cust["id"] and x["status"] != "canceled"
    ]
    return objects.list_object(copy.deepcopy(subs), f"/v1/customers/{cust['id']}/subscriptions")


@api(bp, "/v1/customers", ["POST"])
def create_customer(p: Params, ctx: Ctx):
    """A customer; cards come through Checkout and the portal, so payment method parameters are refused."""
    email = p.str("email")
    if email is not None and "@" not in email:
        raise invalid("email", "Invalid email address: " + email)
    cust = engine().create_customer(
        ctx,
        email=email,
        name=p.str("name"),
        description=p.str("description"),
        phone=p.str("phone"),
        metadata=p.metadata() or {},
    )
    pm = p.str("payment_method")
    if pm:
        raise invalid("payment_method", "The emulator attaches cards through Checkout and the portal only.")
    inv = p.dict("invoice_settings")
    if inv:
        dpm = inv.str("default_payment_method")
        if dpm:
            raise no_such("PaymentMethod", dpm, param="invoice_settings[default_payment_method]", status=400)
        inv.ignore("custom_fields", "footer", "rendering_options")
        inv.done()
    p.ignore(
        "address",
        "shipping",
        "preferred_locales",
        "tax_exempt",
        "test_clock",
        "balance",
        "invoice_prefix",
        "tax",
        "tax_id_data",
        "source",
        "coupon",
        "promotion_code",
    )
    p.done()
    return cust


@api(bp, "/v1/customers", ["GET"])
def list_customers(p: Params, ctx: Ctx):
    """Customers newest first, by ``email`` if given."""
    items = newest_first(store().coll("customers"))
    email = p.str("email")
    if email is not None:
        items = [o for o in items if o["email"] == email]
    items = created_filter(p, items)
    p.ignore("test_clock")
    p.done()
    return paginate(items, p, "/v1/customers")


@api(bp, "/v1/customers/search", ["GET"])
def search_customers(p: Params, ctx: Ctx):
    """Search by ``email:``, ``name:`` and ``metadata['k']:`` clauses joined by AND, what this product queries."""
    query = p.str("query", required=True)
    items = newest_first(store().coll("customers"))
    for clause in query.split(" AND "):
        field, _, value = clause.strip().partition(":")
        value = value.strip().strip("'\"")
        if field == "email":
            items = [o for o in items if o["email"] == value]
        elif field == "name":
            items = [o for o in items if o["name"] == value]
        elif field.startswith("metadata["):
            key = field[len("metadata[") : -1].strip("'\"")
            items = [o for o in items if o["metadata"].get(key) == value]
        else:
            raise invalid("query", f"Field '{field}' is not supported by the emulator's search.")
    limit = p.int("limit", minimum=1, maximum=100) or 10
    p.ignore("page")
    p.done()
    return {
        "object": "search_result",
        "data": items[:limit],
        "has_more": len(items) > limit,
        "next_page": None,
        "url": "/v1/customers/search",
    }


@api(bp, "/v1/customers/<cid>", ["GET"])
def retrieve_customer(p: Params, ctx: Ctx, cid: str):
    """One customer; ``expand[]=subscriptions`` adds its live subscriptions."""
    p.done()
    return get_or_404("customers", "customer", cid)


@api(bp, "/v1/customers/<cid>", ["POST"])
def update_customer(p: Params, ctx: Ctx, cid: str):
    """Fields, metadata and the default payment method, which must be one of the customer's own."""
    cust = get_or_404("customers", "customer", cid)
    before = copy.deepcopy(cust)
    for key in ("email", "name", "description", "phone"):
        if p.has(key):
            cust[key] = p.str(key)
    if p.has("balance"):  # cents the customer owes (positive) or has in credit (negative), as Stripe sets it
        cust["balance"] = p.int("balance")
    if cust["email"] and "@" not in cust["email"]:
        raise invalid("email", "Invalid email address: " + cust["email"])
    cust["metadata"] = merge_metadata(cust["metadata"], p.metadata())
    inv = p.dict("invoice_settings")
    if inv:
        if inv.has("default_payment_method"):
            dpm = inv.str("default_payment_method")
            if dpm:
                pm = store().get("payment_methods", dpm)
                if pm is None or pm["customer"] != cid:
                    raise no_such("PaymentMethod", dpm, param="invoice_settings[default_payment_method]", status=400)
            cust["invoice_settings"]["default_payment_method"] = dpm
        inv.ignore("custom_fields", "footer", "rendering_options")
        inv.done()
    p.ignore(
        "address",
        "shipping",
        "preferred_locales",
        "tax_exempt",
        "invoice_prefix",
        "tax",
        "source",
        "coupon",
        "promotion_code",
        "next_invoice_sequence",
    )
    p.done()
    engine().emit_update(ctx, "customer.updated", before, cust)
    return cust


@api(bp, "/v1/customers/<cid>", ["DELETE"])
def delete_customer(p: Params, ctx: Ctx, cid: str):
    """Deleting a customer cancels its live subscriptions first, as Stripe does."""
    cust = get_or_404("customers", "customer", cid)
    p.done()
    for sub in store().coll("subscriptions").values():
        if sub["customer"] == cid and sub["status"] not in ("canceled", "incomplete_expired"):
            engine().cancel_now(ctx, sub)
    del store().coll("customers")[cid]
    engine().emit(ctx, "customer.deleted", cust)
    return {"id": cid, "object": "customer", "deleted": True}


@api(bp, "/v1/customers/<cid>/payment_methods", ["GET"])
def list_customer_pms(p: Params, ctx: Ctx, cid: str):
    """The customer's payment methods, newest first."""
    get_or_404("customers", "customer", cid)
    p.str("type")
    p.ignore("allow_redisplay")
    items = [o for o in newest_first(store().coll("payment_methods")) if o["customer"] == cid]
    p.done()
    return paginate(items, p, f"/v1/customers/{cid}/payment_methods")
