"""Invoices: list, retrieve, lines, pay, and previews of a subscription's next invoice."""

from __future__ import annotations

from flask import Blueprint

from ..billing import Ctx
from ..errors import StripeError, invalid, no_such
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params
from ..plumbing import api, engine, store

bp = Blueprint("invoices", __name__)


@api(bp, "/v1/invoices", ["GET"])
def list_invoices(p: Params, ctx: Ctx):
    """Invoices newest first, by customer, subscription (under ``parent``) or status."""
    items = newest_first(store().coll("invoices"))
    cid = p.str("customer")
    if cid:
        items = [o for o in items if o["customer"] == cid]
    sub_id = p.str("subscription")
    if sub_id:
        items = [
            o for o in items if ((o["parent"] or {}).get("subscription_details") or {}).get("subscription") == sub_id
        ]
    status = p.str("status", choices=["draft", "open", "paid", "uncollectible", "void"])
    if status:
        items = [o for o in items if o["status"] == status]
    items = created_filter(p, items)
    p.ignore("collection_method", "due_date", "customer_account")
    p.done()
    return paginate(items, p, "/v1/invoices")


@api(bp, "/v1/invoices/<in_id>", ["GET"])
def retrieve_invoice(p: Params, ctx: Ctx, in_id: str):
    """One invoice."""
    p.done()
    return get_or_404("invoices", "invoice", in_id)


@api(bp, "/v1/invoices/<in_id>/lines", ["GET"])
def list_invoice_lines(p: Params, ctx: Ctx, in_id: str):
    """An invoice's lines."""
    inv = get_or_404("invoices", "invoice", in_id)
    p.done()
    return paginate(list(inv["lines"]["data"]), p, f"/v1/invoices/{in_id}/lines")


@api(bp, "/v1/invoices/<in_id>/pay", ["POST"])
def pay_invoice(p: Params, ctx: Ctx, in_id: str):
    """Charge an open invoice now with the default card; a decline is a 402 and the invoice stays open."""
    inv = get_or_404("invoices", "invoice", in_id)
    p.ignore("off_session", "payment_method", "forgive", "paid_out_of_band", "source", "mandate")
    p.done()
    if inv["status"] != "open":
        raise StripeError(
            "Invoice is already paid"
            if inv["status"] == "paid"
            else f"You can only pay an open invoice (this one is {inv['status']}).",
            code="invoice_not_editable" if inv["status"] != "paid" else None,
        )
    store().internal("retries").pop(in_id, None)
    if not engine().retry_invoice(ctx, inv):
        store().save()
        raise StripeError(
            "Your card was declined.",
            status=402,
            type="card_error",
            code="card_declined",
            decline_code="generic_decline",
        )
    return inv


@api(bp, "/v1/invoices/create_preview", ["POST"])
def create_invoice_preview(p: Params, ctx: Ctx):
    """The invoice an update of an existing subscription would produce, with nothing changed."""
    s = store()
    cid = p.str("customer")
    sub_id = p.str("subscription")
    if not sub_id:
        raise invalid("subscription", "The emulator previews invoices of existing subscriptions only.")
    sub = get_or_404("subscriptions", "subscription", sub_id, param="subscription", status=400)
    if cid and sub["customer"] != cid:
        raise invalid("subscription", f"The subscription {sub_id} does not belong to customer {cid}.")
    details = p.dict("subscription_details")
    changes, proration, proration_date = [], "create_prorations", None
    if details:
        proration_date = details.int("proration_date", minimum=0)
        proration = (
            details.str("proration_behavior", choices=["create_prorations", "always_invoice", "none"]) or proration
        )
        for i, it in enumerate(details.list_of_dicts("items") or []):
            item_id = it.str("id")
            item = next((x for x in sub["items"]["data"] if x["id"] == item_id), None)
            if it.has("id") and item is None:
                raise no_such(
                    "subscription_item", item_id or "", param=f"subscription_details[items][{i}][id]", status=400
                )
            price_id = it.str("price")
            price = s.get("prices", price_id) if price_id else (item or {}).get("price")
            if price is None:
                raise no_such("price", price_id or "", param=f"subscription_details[items][{i}][price]", status=400)
            qty = it.int("quantity", minimum=0)
            it.ignore("metadata", "tax_rates", "discounts", "price_data", "billing_thresholds")
            it.done()
            changes.append(
                (item, price, qty if qty is not None else (item or {}).get("quantity", 1), bool(it.bool("deleted")))
            )
        details.ignore(
            "billing_cycle_anchor",
            "cancel_at_period_end",
            "cancel_now",
            "default_tax_rates",
            "resume_at",
            "start_date",
            "trial_end",
            "cancel_at",
        )
        details.done()
    p.ignore(
        "automatic_tax",
        "currency",
        "customer_details",
        "discounts",
        "invoice_items",
        "issuer",
        "on_behalf_of",
        "preview_mode",
        "schedule",
        "schedule_details",
    )
    p.done()
    if proration_date is not None:
        if not changes or proration == "none":
            raise invalid(
                "subscription_details[proration_date]",
                "subscription_details[proration_date] needs subscription_details[items] and a proration_behavior "
                "other than none.",
            )
        engine().check_proration_date(sub, proration_date, "subscription_details[proration_date]")
    return engine().preview(ctx, sub, changes, proration, proration_date)
