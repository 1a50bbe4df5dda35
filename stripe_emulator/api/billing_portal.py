"""Customer portal: sessions (with ``flow_data``) and the one default configuration.

The portal itself is a hosted page (``pages``).
"""

from __future__ import annotations

from flask import Blueprint

from .. import objects
from ..billing import Ctx
from ..errors import invalid, missing_param, no_such
from ..listing import get_or_404, paginate
from ..params import Params
from ..plumbing import api, store
from ..store import new_id

bp = Blueprint("billing_portal", __name__)


FLOW_TYPES = ["payment_method_update", "subscription_cancel", "subscription_update", "subscription_update_confirm"]


def _after_completion(ac: Params) -> dict:
    """``flow_data[after_completion]``: where the portal goes once the flow is done."""
    after = {"hosted_confirmation": None, "redirect": None, "type": "portal_homepage"}
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
        detail["items"] = [{"id": it.str("id", required=True), "price": it.str("price"),
                            "quantity": it.int("quantity")} for it in its]
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
    fd = p.dict("flow_data")
    flow = _flow(fd, cid) if fd else None
    configuration = p.str("configuration") or "bpc_emulator_default"
    bps_id = new_id("bps", 24)
    sess = objects.portal_session(bps_id, s.now(), customer_id=cid, return_url=return_url,
                                  url=f"{ctx.base_url}/p/session/{bps_id}", flow=flow,
                                  locale=p.str("locale"), configuration=configuration)
    p.ignore("on_behalf_of")
    p.done()
    s.put("portal_sessions", sess)
    return sess


@api(bp, "/v1/billing_portal/configurations", ["GET"])
def list_portal_configurations(p: Params, ctx: Ctx):
    """One default, active configuration (the Dashboard's settings are not emulated)."""
    p.ignore("active", "is_default")
    p.done()
    return paginate([objects.portal_configuration(store().now())], p, "/v1/billing_portal/configurations")


@api(bp, "/v1/billing_portal/configurations/<bpc_id>", ["GET"])
def retrieve_portal_configuration(p: Params, ctx: Ctx, bpc_id: str):
    """Only the default configuration exists."""
    p.done()
    if bpc_id != "bpc_emulator_default":
        raise no_such("billing_portal.configuration", bpc_id)
    return objects.portal_configuration(store().now())
