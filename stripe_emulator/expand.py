"""``expand[]`` support: replace ids by the objects they name, on a copy.

Stored objects keep expandable fields as ids (what Stripe returns without
expansion); responses are expanded on the way out so an expanded
``subscription`` never goes stale inside a stored checkout session.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

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

# Fields Stripe only includes when expanded: (object type, path from that object) -> builder(store, node)
# where node is the object holding the field (``total_details`` for ``total_details.breakdown``).
Includable = Callable[[Store, dict], dict | None]


def lookup(store: Store, obj_id: str) -> dict | None:
    for prefix, coll in PREFIXES.items():
        if obj_id.startswith(prefix):
            return store.get(coll, obj_id)
    return None


def expand(store: Store, obj: dict, paths: list, includables: dict) -> dict:
    """A copy of ``obj`` with every ``expand[]`` path applied (at most 4 levels, as Stripe allows)."""
    out = copy.deepcopy(obj)
    for path in paths:
        if len(path.split(".")) > 4:
            raise StripeError(f"You cannot expand more than 4 levels of a property. Property: {path}", param="expand")
        _expand_path(store, out, path.split("."), Walk(path, out.get("object"), ""), includables)
    return out


class Walk:
    """Where an expansion is: the full path asked for, the nearest object's type and the path from it."""

    def __init__(self, full: str, kind: str | None, rel: str):
        self.full, self.kind, self.rel = full, kind, rel

    def into(self, node: dict, key: str) -> Walk:
        """Step into ``node[key]``; a node with an ``object`` type starts a new relative path."""
        if node.get("object"):
            return Walk(self.full, node["object"], key)
        return Walk(self.full, self.kind, f"{self.rel}.{key}" if self.rel else key)

    def refuse(self, why: str = "") -> StripeError:
        return StripeError(f"This property cannot be expanded ({self.full}).{why}", param="expand")


def _resolve_id(store: Store, value: str, walk: Walk) -> dict:
    """The stored object an id names; ids of objects the emulator does not keep cannot be expanded."""
    target = lookup(store, value)
    if target is None:
        raise walk.refuse(f" The emulator does not keep the object {value} refers to.")
    return copy.deepcopy(target)


def _expand_path(store: Store, node, parts: list, walk: Walk, includables: dict) -> None:
    """Expand ``parts`` under ``node``: ids become objects, includable fields are built, nulls and
    empty lists stay as they are."""
    if isinstance(node, list):
        for item in node:
            _expand_path(store, item, parts, walk, includables)
        return
    if not isinstance(node, dict):
        return
    key, rest = parts[0], parts[1:]
    here = walk.into(node, key)
    builder = includables.get((here.kind, here.rel))
    if key not in node and builder is None:
        raise walk.refuse()
    value = node.get(key)
    if builder is not None and (value is None or isinstance(value, str)):
        value = node[key] = builder(store, node)
    elif isinstance(value, str):
        value = node[key] = _resolve_id(store, value, walk)
    elif isinstance(value, list):
        value = node[key] = [_resolve_id(store, v, walk) if isinstance(v, str) else v for v in value]
    elif isinstance(value, dict) and not rest and "id" not in value:
        raise walk.refuse()
    if rest and value is not None:
        _expand_path(store, value, rest, here, includables)
