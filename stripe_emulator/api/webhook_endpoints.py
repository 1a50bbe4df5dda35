"""Webhook endpoints: create (the signing secret is returned once, at creation), retrieve, update,
list, delete."""

from __future__ import annotations

import copy
import secrets

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..errors import invalid, missing_param
from ..listing import get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, store
from ..store import new_id

bp = Blueprint("webhook_endpoints", __name__)


def _enabled_events(p: Params) -> list:
    """``enabled_events[]``: at least one non-empty event type (``*`` for all)."""
    events = p.list("enabled_events", required=True)
    if not events:
        raise missing_param("enabled_events")
    for i, ev in enumerate(events):
        if not isinstance(ev, str) or not ev:
            raise invalid(f"enabled_events[{i}]", f"Invalid enabled_events[{i}]")
    return events


def _api_version(p: Params) -> str | None:
    """``api_version`` as asked, or null (Stripe's value when none is given: events then come in the account's
    version). The emulator renders one version's shapes, so an endpoint asking for another is refused rather
    than sent events whose shape would not match it."""
    version = p.str("api_version")
    if version is not None and version != objects.API_VERSION:
        raise invalid("api_version", objects.unsupported_version(version))
    return version


def _public_endpoint(we: dict) -> dict:
    """The endpoint as stored and shown after creation: without its secret."""
    out = copy.deepcopy(we)
    out["secret"] = None  # only returned at creation
    return out


@api(bp, "/v1/webhook_endpoints", ["POST"])
def create_webhook_endpoint(p: Params, ctx: Ctx):
    """An endpoint; its signing secret is returned here only."""
    url = p.str("url", required=True)
    if not url.startswith(("http://", "https://")):
        raise invalid("url", "Invalid URL: URL must be publicly accessible and use http:// or https://")
    events = _enabled_events(p)
    secret = "whsec_" + secrets.token_hex(24)
    we = objects.webhook_endpoint(
        new_id("we", 24),
        store().now(),
        url=url,
        enabled_events=events,
        secret=secret,
        description=p.str("description"),
        metadata=p.metadata() or {},
        api_version=_api_version(p),
    )
    p.ignore("connect")
    p.done()
    store().internal("secrets")[we["id"]] = secret
    store().put("webhook_endpoints", _public_endpoint(we))
    return we


@api(bp, "/v1/webhook_endpoints", ["GET"])
def list_webhook_endpoints(p: Params, ctx: Ctx):
    """Endpoints newest first."""
    p.done()
    return paginate(newest_first(store().coll("webhook_endpoints")), p, "/v1/webhook_endpoints")


@api(bp, "/v1/webhook_endpoints/<we_id>", ["GET"])
def retrieve_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
    """One endpoint, without its secret."""
    p.done()
    return get_or_404("webhook_endpoints", "webhook_endpoint", we_id)


@api(bp, "/v1/webhook_endpoints/<we_id>", ["POST"])
def update_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
    """URL, events, enabled flag, description and metadata."""
    we = get_or_404("webhook_endpoints", "webhook_endpoint", we_id)
    if p.has("url"):
        we["url"] = p.str("url", required=True)
    if p.has("enabled_events"):
        we["enabled_events"] = _enabled_events(p)
    if p.has("disabled"):
        we["status"] = "disabled" if p.bool("disabled") else "enabled"
    if p.has("description"):
        we["description"] = p.str("description")
    we["metadata"] = merge_metadata(we["metadata"], p.metadata())
    p.done()
    return we


@api(bp, "/v1/webhook_endpoints/<we_id>", ["DELETE"])
def delete_webhook_endpoint(p: Params, ctx: Ctx, we_id: str):
    """Deliveries to the endpoint stop with it."""
    get_or_404("webhook_endpoints", "webhook_endpoint", we_id)
    p.done()
    del store().coll("webhook_endpoints")[we_id]
    store().internal("secrets").pop(we_id, None)
    return {"id": we_id, "object": "webhook_endpoint", "deleted": True}
