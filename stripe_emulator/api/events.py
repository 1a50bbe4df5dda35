"""Events: retrieve, list by ``type`` (``prefix.*`` too) or ``types[]``."""

from __future__ import annotations

from flask import Blueprint

from ..billing import Ctx
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params
from ..plumbing import api, store

bp = Blueprint("events", __name__)


@api(bp, "/v1/events", ["GET"])
def list_events(p: Params, ctx: Ctx):
    """Events newest first; ``type`` may end in ``*`` to match a prefix."""
    items = newest_first(store().coll("events"))
    etype = p.str("type")
    if etype:
        if etype.endswith("*"):
            items = [o for o in items if o["type"].startswith(etype[:-1])]
        else:
            items = [o for o in items if o["type"] == etype]
    types = p.list("types")
    if types:
        items = [o for o in items if o["type"] in types]
    items = created_filter(p, items)
    p.ignore("delivery_success")
    p.done()
    return paginate(items, p, "/v1/events")


@api(bp, "/v1/events/<evt_id>", ["GET"])
def retrieve_event(p: Params, ctx: Ctx, evt_id: str):
    """One event, as delivered to webhooks."""
    p.done()
    return get_or_404("events", "event", evt_id)
