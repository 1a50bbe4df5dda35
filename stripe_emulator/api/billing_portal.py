"""Customer portal: sessions (with ``flow_data``) and configurations (create, update, list, retrieve).

The portal itself is a hosted page (``pages``).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint

from .. import declared, objects
from ..billing import Ctx
from ..errors import invalid, missing_param, no_such
from ..listing import get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, engine, store
from ..store import new_id

bp = Blueprint("billing_portal", __name__)


# The configuration feature each flow opens.
FLOW_FEATURES = {
    "payment_method_update": "payment_method_update",
    "subscription_cancel": "subscription_cancel",
    "subscription_update": "subscription_update",
    "subscription_update_confirm": "subscription_update",
}
FLOW_TYPES = ["payment_method_update", "subscription_cancel", "subscription_update", "subscription_update_confirm"]


def _after_completion(ac: Params) -> dict:
    """``flow_data[after_completion]``: where the portal goes once the flow is done."""
    after: dict[str, Any] = {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"}
    ac_type = ac.str("type", required=True, choices=["hosted_confirmation", "portal_homepage", "redirect"])
    after["type"] = ac_type
    red = ac.dict("redirect")
    if ac_type == "redirect":
        if not red:
            raise missing_param("flow_data[after_completion][redirect]")
        after["redirect"] = {"return_url": red.str("return_url", required=True)}
        red.done()
    hc = ac.dict("hosted_confirmation")
    if ac_type == "hosted_confirmation":
        after["hosted_confirmation"] = {"custom_message": hc.str("custom_message") if hc else None}
        if hc:
            hc.done()
    ac.done()
    return after


def _flow_subscription(section: Params, ftype: str, cid: str) -> dict:
    """``flow_data[<type>]`` of a subscription flow: the customer's live subscription and the flow's details."""
    sub_id = section.str("subscription", required=True)
    sub = store().get("subscriptions", sub_id)
    if sub is None or sub["customer"] != cid:
        raise no_such("subscription", sub_id, param=f"flow_data[{ftype}][subscription]", status=400)
    if sub["status"] == "canceled":
        raise invalid(f"flow_data[{ftype}][subscription]", "The subscription is canceled.")
    detail: dict = {"subscription": sub_id}
    if ftype == "subscription_cancel":
        detail["retention"] = None
        section.ignore("retention")
    if ftype == "subscription_update_confirm":
        its = section.list_of_dicts("items", required=True)
        detail["items"] = [
            {"id": it.str("id", required=True), "price": it.str("price"), "quantity": it.int("quantity")} for it in its
        ]
        detail["discounts"] = None
        section.ignore("discounts")
    section.done()
    return detail


def _flow(fd: Params, cid: str) -> dict:
    """``flow_data``: the section the portal opens on, and what happens after it."""
    ftype = fd.str("type", required=True, choices=FLOW_TYPES)
    flow = {
        "after_completion": {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"},
        "subscription_cancel": None,
        "subscription_update": None,
        "subscription_update_confirm": None,
        "type": ftype,
    }
    ac = fd.dict("after_completion")
    if ac:
        flow["after_completion"] = _after_completion(ac)
    if ftype != "payment_method_update":
        flow[ftype] = _flow_subscription(fd.dict(ftype, required=True), ftype, cid)
    fd.done()
    return flow


@api(bp, "/v1/billing_portal/sessions", ["POST"])
def create_portal_session(p: Params, ctx: Ctx):
    """A portal session for an existing customer; ``flow_data`` opens one section and says what follows it."""
    s = store()
    cid = p.str("customer", required=True)
    get_or_404("customers", "customer", cid, param="customer", status=400)
    return_url = p.str("return_url")
    if return_url is not None and not return_url.startswith(("http://", "https://")):
        raise invalid("return_url", "Not a valid URL")
    configuration = p.str("configuration") or objects.DEFAULT_PORTAL_CONFIGURATION
    cfg = get_or_404(
        "portal_configurations", "billing_portal.configuration", configuration, param="configuration", status=400
    )
    if not cfg["active"]:
        raise invalid("configuration", f"The configuration {configuration} is not active.")
    fd = p.dict("flow_data")
    flow = _flow(fd, cid) if fd else None
    feature = FLOW_FEATURES.get(flow["type"]) if flow else None
    if flow and feature and not cfg["features"][feature]["enabled"]:
        raise invalid(
            "flow_data[type]",
            f"The {flow['type']} flow needs features[{feature}][enabled] on the portal configuration {configuration}.",
        )
    bps_id = new_id("bps", 24)
    sess = objects.portal_session(
        bps_id,
        s.now(),
        customer_id=cid,
        return_url=return_url,
        url=f"/p/session/{bps_id}",  # served on the current public URL (objects.public_urls)
        flow=flow,
        locale=p.str("locale"),
        configuration=configuration,
    )
    p.ignore("on_behalf_of")
    p.done()
    s.put("portal_sessions", sess)
    return sess


def _merge(target: dict, update: dict) -> None:
    """Posted settings onto stored ones: nested objects merge, ``""`` unsets (an empty list or null)."""
    for key, value in update.items():
        if value == "":
            target[key] = [] if isinstance(target.get(key), list) else None
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _portal_products(posted: list, name: str) -> list:
    """``features[subscription_update][products]``: existing products and recurring prices of theirs."""
    products = []
    for i, entry in enumerate(posted):
        product_id = entry.get("product")
        if not product_id:
            raise missing_param(f"{name}[{i}][product]")
        get_or_404("products", "product", product_id, param=f"{name}[{i}][product]", status=400)
        prices = entry.get("prices") or []
        if not prices:
            raise missing_param(f"{name}[{i}][prices]")
        for j, price_id in enumerate(prices):
            price = store().get("prices", price_id)
            if price is None:
                raise no_such("price", price_id, param=f"{name}[{i}][prices][{j}]", status=400)
            if price["product"] != product_id or price["type"] != "recurring":
                raise invalid(
                    f"{name}[{i}][prices][{j}]",
                    f"The price {price_id} is not a recurring price of product {product_id}.",
                )
        product = objects.portal_product(product_id, prices)
        _merge(product["adjustable_quantity"], entry.get("adjustable_quantity") or {})
        products.append(product)
    return products


def _apply(cfg: dict, p: Params, op: str) -> dict:
    """Set what create/update parameters give on ``cfg`` (parameters are checked against the library's
    declaration by the plumbing, so here they are only coerced to typed values and merged)."""
    typed_dict = declared.operation("POST", op)
    data = declared.coerce(typed_dict, p.data) if typed_dict else dict(p.data)
    for key in ("features", "business_profile", "login_page"):
        update = data.get(key)
        if isinstance(update, dict):
            products = (update.get("subscription_update") or {}).pop("products", None)
            _merge(cfg[key], update)
            if products is not None:
                cfg["features"]["subscription_update"]["products"] = _portal_products(
                    products or [], "features[subscription_update][products]"
                )
    for key in ("name", "default_return_url", "active"):
        if key in data:
            cfg[key] = data[key] if data[key] != "" else None
    cfg["metadata"] = merge_metadata(cfg["metadata"], p.metadata())
    if cfg["login_page"]["enabled"] and not cfg["login_page"]["url"]:
        cfg["login_page"]["url"] = f"https://billing.stripe.com/p/login/test_{cfg['id'][4:16]}"
    p.ignore(*data)
    p.done()
    cfg["updated"] = store().now()
    return cfg


@api(bp, "/v1/billing_portal/configurations", ["POST"])
def create_portal_configuration(p: Params, ctx: Ctx):
    """A configuration over the default features; ``features`` is required, as Stripe requires it."""
    if not p.dict("features", required=True):
        raise missing_param("features")
    s = store()
    cfg = objects.portal_configuration(new_id("bpc", 24), s.now(), objects.portal_features([]))
    cfg = _apply(cfg, p, "/v1/billing_portal/configurations")
    s.put("portal_configurations", cfg)
    engine().emit(ctx, "billing_portal.configuration.created", cfg)
    return cfg


@api(bp, "/v1/billing_portal/configurations/<bpc_id>", ["POST"])
def update_portal_configuration(p: Params, ctx: Ctx, bpc_id: str):
    """Merge the given settings into the configuration; portal sessions using it follow at once."""
    before = get_or_404("portal_configurations", "billing_portal.configuration", bpc_id)
    if before["is_default"] and p.raw("active") in ("false", "False", "0"):
        raise invalid("active", "The default configuration cannot be deactivated.")
    cfg = _apply(copy.deepcopy(before), p, "/v1/billing_portal/configurations/{configuration}")
    store().put("portal_configurations", cfg)
    engine().emit_update(ctx, "billing_portal.configuration.updated", before, cfg)
    return cfg


@api(bp, "/v1/billing_portal/configurations", ["GET"])
def list_portal_configurations(p: Params, ctx: Ctx):
    """Configurations newest first, by ``active`` and ``is_default``."""
    items = newest_first(store().coll("portal_configurations"))
    for key in ("active", "is_default"):
        flag = p.bool(key)
        if flag is not None:
            items = [c for c in items if c[key] == flag]
    p.done()
    return paginate(items, p, "/v1/billing_portal/configurations")


@api(bp, "/v1/billing_portal/configurations/<bpc_id>", ["GET"])
def retrieve_portal_configuration(p: Params, ctx: Ctx, bpc_id: str):
    """One configuration."""
    p.done()
    return get_or_404("portal_configurations", "billing_portal.configuration", bpc_id)
