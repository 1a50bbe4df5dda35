"""Lookups and Stripe list semantics shared by the resource modules."""

from __future__ import annotations

from . import objects
from .errors import invalid, no_such
from .params import Params
from .plumbing import store


def paginate(items: list, p: Params, url: str) -> dict:
    """Stripe list semantics over ``items`` ordered newest first."""
    limit = p.int("limit", minimum=1, maximum=100) or 10
    after = p.str("starting_after")
    before = p.str("ending_before")
    ids = [o["id"] for o in items]
    if after:
        if after not in ids:
            raise no_such("object", after, param="starting_after", status=400)
        start = ids.index(after) + 1
        page = items[start : start + limit]
        has_more = start + limit < len(items)
    elif before:
        if before not in ids:
            raise no_such("object", before, param="ending_before", status=400)
        end = ids.index(before)
        page = items[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page = items[:limit]
        has_more = len(items) > limit
    return objects.list_object(page, url, has_more)


def newest_first(coll: dict) -> list:
    """Stored collections keep insertion order, which is creation order."""
    return list(reversed(list(coll.values())))


def get_or_404(coll: str, kind: str, obj_id: str, param: str = "id", status: int = 404) -> dict:
    """The stored object, or Stripe's ``resource_missing`` (400 when the id came in a parameter)."""
    obj = store().get(coll, obj_id)
    if obj is None:
        raise no_such(kind, obj_id, param=param, status=status)
    return obj


def created_filter(p: Params, items: list) -> list:
    """``created=<unix>`` or ``created[gt|gte|lt|lte]=<unix>``."""
    created = p.raw("created")
    if created is None:
        return items
    if isinstance(created, str):
        return [o for o in items if o["created"] == int(created)]
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    for op, value in created.items():
        if op not in ops:
            raise invalid(f"created[{op}]", f"Received unknown parameter: created[{op}]")
        items = [o for o in items if ops[op](o["created"], int(value))]
    return items
