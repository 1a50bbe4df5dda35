"""``expand[]`` support: replace ids by the objects they name, on a copy.

Stored objects keep expandable fields as ids (what Stripe returns without
expansion); responses are expanded on the way out so an expanded
``subscription`` never goes stale inside a stored checkout session.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

from .errors import StripeError
from .store import Store

PREFIXES = {
    "sub_sched_": "subscription_schedules",
    "cus_": "customers",
    "sub_": "subscriptions",
    "in_": "invoices",
    "pm_": "payment_methods",
    "price_": "prices",
    "prod_": "products",
    "cs_": "checkout_sessions",
    "evt_": "events",
    "we_": "webhook_endpoints",
}

# Fields Stripe only includes when expanded: (object type, field) -> builder(store, obj)
Includable = Callable[[Store, dict], Optional[dict]]


def lookup(store: Store, obj_id: str) -> Optional[dict]:
    for prefix, coll in PREFIXES.items():
        if obj_id.startswith(prefix):
            return store.get(coll, obj_id)
    return None


def expand(store: Store, obj: dict, paths: list, includables: dict) -> dict:
    out = copy.deepcopy(obj)
    for path in paths:
        if len(path.split(".")) > 4:
            raise StripeError(f"You cannot expand more than 4 levels of a property. Property: {path}",
                              param="expand")
        _expand_path(store, out, path.split("."), path, includables)
    return out


def _expand_path(store: Store, node, parts: list, full: str, includables: dict) -> None:
    if isinstance(node, list):
        for item in node:
            _expand_path(store, item, parts, full, includables)
        return
    if not isinstance(node, dict):
        return
    key, rest = parts[0], parts[1:]
    if key not in node:
        raise StripeError(f"This property cannot be expanded ({full}).", param="expand")
    value = node[key]
    builder = includables.get((node.get("object"), key))
    if builder is not None and (value is None or isinstance(value, str)):
        value = node[key] = builder(store, node)
    elif isinstance(value, str):
        target = lookup(store, value)
        if target is None:
            raise StripeError(f"This property cannot be expanded ({full}).", param="expand")
        value = node[key] = copy.deepcopy(target)
    elif value is not None and not rest and not (isinstance(value, dict) and "id" in value):
        raise StripeError(f"This property cannot be expanded ({full}).", param="expand")
    if rest and value is not None:
        _expand_path(store, value, rest, full, includables)
