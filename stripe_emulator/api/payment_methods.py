"""Payment methods: list by customer, retrieve, detach. Cards are attached by Checkout and the portal."""

from __future__ import annotations

from flask import Blueprint

from ..billing import Ctx
from ..errors import StripeError
from ..listing import get_or_404, newest_first, paginate
from ..params import Params
from ..plumbing import api, engine, store

bp = Blueprint("payment_methods", __name__)


@api(bp, "/v1/payment_methods", ["GET"])
def list_pms(p: Params, ctx: Ctx):
    """Stripe lists only a given customer's payment methods; without ``customer`` the list is empty."""
    cid = p.str("customer")
    ptype = p.str("type")
    items = newest_first(store().coll("payment_methods"))
    if cid:
        get_or_404("customers", "customer", cid, param="customer", status=400)
        items = [o for o in items if o["customer"] == cid]
    else:
        items = []  # Stripe lists only a customer's (or Treasury) payment methods
    if ptype:
        items = [o for o in items if o["type"] == ptype]
    p.done()
    return paginate(items, p, "/v1/payment_methods")


@api(bp, "/v1/payment_methods/<pmid>", ["GET"])
def retrieve_pm(p: Params, ctx: Ctx, pmid: str):
    """One payment method."""
    p.done()
    return get_or_404("payment_methods", "payment_method", pmid)


@api(bp, "/v1/payment_methods/<pmid>/detach", ["POST"])
def detach_pm(p: Params, ctx: Ctx, pmid: str):
    """Detaching the customer's default card also clears it as the default."""
    pm = get_or_404("payment_methods", "payment_method", pmid)
    p.done()
    if pm["customer"] is None:
        raise StripeError(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            code="payment_method_unexpected_state",
        )
    cust = store().get("customers", pm["customer"])
    if cust and cust["invoice_settings"]["default_payment_method"] == pmid:
        engine().set_default_payment_method(ctx, cust, None)
    pm["customer"] = None
    engine().emit(ctx, "payment_method.detached", pm)
    return pm
