"""Products and prices: create, retrieve, update, list (prices by lookup key, product, type, interval).

A product may be created with ``default_price_data``; a price with ``product_data``. Lookup keys are
unique, moved with ``transfer_lookup_key``.
"""

from __future__ import annotations

import copy

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..errors import StripeError, invalid, missing_param, no_such
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, engine, store
from ..store import new_id

bp = Blueprint("products", __name__)


@api(bp, "/v1/products", ["POST"])
def create_product(p: Params, ctx: Ctx):
    """A product, optionally with a default price built from ``default_price_data``."""
    name = p.str("name", required=True)
    pid = p.str("id") or new_id("prod", 14)
    if store().get("products", pid):
        raise StripeError("Product already exists.", code="resource_already_exists", param="id")
    prod = objects.product(
        pid,
        name,
        store().now(),
        description=p.str("description"),
        metadata=p.metadata() or {},
        active=p.bool("active") is not False,
    )
    for key in ("statement_descriptor", "unit_label", "url", "tax_code"):
        if p.has(key):
            prod[key] = p.str(key)
    store().put("products", prod)
    dpd = p.dict("default_price_data")
    if dpd:
        price = _build_price(dpd, pid)
        dpd.done()
        store().put("prices", price)
        prod["default_price"] = price["id"]
    p.done()
    engine().emit(ctx, "product.created", prod)
    return prod


@api(bp, "/v1/products", ["GET"])
def list_products(p: Params, ctx: Ctx):
    """Products newest first, by ``active`` or ``ids``."""
    items = newest_first(store().coll("products"))
    active = p.bool("active")
    if active is not None:
        items = [o for o in items if o["active"] == active]
    ids = p.list("ids")
    if ids:
        items = [o for o in items if o["id"] in ids]
    items = created_filter(p, items)
    p.ignore("shippable", "url")
    p.done()
    return paginate(items, p, "/v1/products")


@api(bp, "/v1/products/<pid>", ["GET"])
def retrieve_product(p: Params, ctx: Ctx, pid: str):
    """One product."""
    p.done()
    return get_or_404("products", "product", pid)


@api(bp, "/v1/products/<pid>", ["POST"])
def update_product(p: Params, ctx: Ctx, pid: str):
    """Fields, ``default_price`` (an existing price) and metadata."""
    prod = get_or_404("products", "product", pid)
    before = copy.deepcopy(prod)
    if p.has("name"):
        prod["name"] = p.str("name", required=True)
    for key in ("description", "statement_descriptor", "unit_label", "url", "tax_code"):
        if p.has(key):
            prod[key] = p.str(key)
    if p.has("active"):
        prod["active"] = p.bool("active")
    if p.has("default_price"):
        dp = p.str("default_price")
        if dp and not store().get("prices", dp):
            raise no_such("price", dp, param="default_price", status=400)
        prod["default_price"] = dp
    prod["metadata"] = merge_metadata(prod["metadata"], p.metadata())
    p.done()
    if before != prod:
        prod["updated"] = store().now()
    engine().emit_update(ctx, "product.updated", before, prod)
    return prod


@api(bp, "/v1/products/<pid>/features", ["GET"])
def list_product_features(p: Params, ctx: Ctx, pid: str):
    """A product's entitlement features: none, since entitlements are not emulated (an empty list, not a 404)."""
    get_or_404("products", "product", pid)
    p.done()
    return paginate([], p, f"/v1/products/{pid}/features")


def _build_price(p: Params, product_id: str | None = None) -> dict:
    """A price from create parameters (``product`` or ``product_data``); lookup keys stay unique."""
    currency = (p.str("currency", required=True) or "").lower()
    if len(currency) != 3:
        raise invalid(p._name("currency"), f"Invalid currency: {currency}")
    if product_id is None:
        product_id = p.str("product")
        pdata = p.dict("product_data")
        if product_id:
            get_or_404("products", "product", product_id, param="product", status=400)
        elif pdata:
            prod = objects.product(
                new_id("prod", 14), pdata.str("name", required=True), store().now(), metadata=pdata.metadata() or {}
            )
            pdata.done()
            store().put("products", prod)
            product_id = prod["id"]
        else:
            raise missing_param("product")
    unit_amount = p.int("unit_amount", minimum=0)
    if unit_amount is None:
        decimal = p.str("unit_amount_decimal")
        if decimal is None:
            raise missing_param(p._name("unit_amount"))
        unit_amount = int(float(decimal))
    rec = p.dict("recurring")
    interval = interval_count = None
    if rec:
        interval = rec.str("interval", required=True, choices=["day", "week", "month", "year"])
        interval_count = rec.int("interval_count", minimum=1) or 1
        rec.ignore("usage_type", "meter", "trial_period_days")
        rec.done()
    lookup_key = p.str("lookup_key")
    if lookup_key:
        clash = [x for x in store().coll("prices").values() if x["lookup_key"] == lookup_key]
        if clash:
            if p.bool("transfer_lookup_key"):
                for x in clash:
                    x["lookup_key"] = None
            else:
                raise invalid(p._name("lookup_key"), f"A price ({clash[0]['id']}) already uses that lookup key.")
    price = objects.price(
        new_id("price", 24),
        product_id,
        unit_amount,
        store().now(),
        currency=currency,
        interval=interval,
        interval_count=interval_count or 1,
        lookup_key=lookup_key,
        nickname=p.str("nickname"),
        metadata=p.metadata() or {},
        active=p.bool("active") is not False,
    )
    p.ignore("tax_behavior", "transfer_lookup_key")
    return price


@api(bp, "/v1/prices", ["POST"])
def create_price(p: Params, ctx: Ctx):
    """A price; ``transfer_lookup_key`` takes the lookup key from the price holding it."""
    price = _build_price(p)
    p.done()
    store().put("prices", price)
    engine().emit(ctx, "price.created", price)
    return price


@api(bp, "/v1/prices", ["GET"])
def list_prices(p: Params, ctx: Ctx):
    """Prices newest first, by ``lookup_keys[]`` (at most 10), product, type, currency or interval."""
    items = newest_first(store().coll("prices"))
    active = p.bool("active")
    if active is not None:
        items = [o for o in items if o["active"] == active]
    product = p.str("product")
    if product:
        items = [o for o in items if o["product"] == product]
    ptype = p.str("type", choices=["one_time", "recurring"])
    if ptype:
        items = [o for o in items if o["type"] == ptype]
    currency = p.str("currency")
    if currency:
        items = [o for o in items if o["currency"] == currency.lower()]
    keys = p.list("lookup_keys")
    if keys is not None:
        if len(keys) > 10:
            raise invalid("lookup_keys", "Invalid lookup_keys: must contain at most 10 keys")
        items = [o for o in items if o["lookup_key"] in keys]
    rec = p.dict("recurring")
    if rec:
        interval = rec.str("interval", choices=["day", "week", "month", "year"])
        if interval:
            items = [o for o in items if (o["recurring"] or {}).get("interval") == interval]
        rec.ignore("usage_type", "meter")
        rec.done()
    items = created_filter(p, items)
    p.done()
    return paginate(items, p, "/v1/prices")


@api(bp, "/v1/prices/<pid>", ["GET"])
def retrieve_price(p: Params, ctx: Ctx, pid: str):
    """One price."""
    p.done()
    return get_or_404("prices", "price", pid)


@api(bp, "/v1/prices/<pid>", ["POST"])
def update_price(p: Params, ctx: Ctx, pid: str):
    """Active flag, nickname, lookup key and metadata; amounts are immutable, as in Stripe."""
    price = get_or_404("prices", "price", pid)
    before = copy.deepcopy(price)
    if p.has("active"):
        price["active"] = p.bool("active")
    if p.has("nickname"):
        price["nickname"] = p.str("nickname")
    if p.has("lookup_key"):
        key = p.str("lookup_key")
        clash = [x for x in store().coll("prices").values() if key and x["lookup_key"] == key and x is not price]
        if clash and not p.bool("transfer_lookup_key"):
            raise invalid("lookup_key", f"A price ({clash[0]['id']}) already uses that lookup key.")
        for x in clash:
            x["lookup_key"] = None
        price["lookup_key"] = key
    price["metadata"] = merge_metadata(price["metadata"], p.metadata())
    p.ignore("tax_behavior", "transfer_lookup_key")
    p.done()
    engine().emit_update(ctx, "price.updated", before, price)
    return price
