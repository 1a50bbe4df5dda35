"""Subscriptions: retrieve, list, update (items with proration, cancellation, metadata, payment
method), cancel; and the list of a subscription's items."""

from __future__ import annotations

import copy

from flask import Blueprint

from ..billing import Ctx
from ..errors import StripeError, invalid, missing_param, no_such
from ..listing import created_filter, get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, engine, store

bp = Blueprint("subscriptions", __name__)


@api(bp, "/v1/subscriptions", ["GET"])
def list_subscriptions(p: Params, ctx: Ctx):
    """Subscriptions newest first; without ``status`` the ended ones are left out, as Stripe does."""
    items = newest_first(store().coll("subscriptions"))
    cid = p.str("customer")
    if cid:
        items = [o for o in items if o["customer"] == cid]
    status = p.str(
        "status",
        choices=[
            "active",
            "all",
            "canceled",
            "ended",
            "incomplete",
            "incomplete_expired",
            "past_due",
            "paused",
            "trialing",
            "unpaid",
        ],
    )
    if status is None:
        items = [o for o in items if o["status"] not in ("canceled", "incomplete_expired")]
    elif status == "ended":
        items = [o for o in items if o["status"] in ("canceled", "incomplete_expired")]
    elif status != "all":
        items = [o for o in items if o["status"] == status]
    price = p.str("price")
    if price:
        items = [o for o in items if any(i["price"]["id"] == price for i in o["items"]["data"])]
    items = created_filter(p, items)
    p.ignore("collection_method", "current_period_end", "current_period_start", "test_clock", "automatic_tax")
    p.done()
    return paginate(items, p, "/v1/subscriptions")


@api(bp, "/v1/subscriptions/<sub_id>", ["GET"])
def retrieve_subscription(p: Params, ctx: Ctx, sub_id: str):
    """One subscription."""
    p.done()
    return get_or_404("subscriptions", "subscription", sub_id)


PRORATIONS = ["create_prorations", "always_invoice", "none"]
FEEDBACK = [
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
]


def _recurring_price(price_id: str, param: str) -> dict:
    """An active recurring price, as ``items[][price]`` requires."""
    price = store().get("prices", price_id)
    if price is None:
        raise no_such("price", price_id, param=param, status=400)
    if price["type"] != "recurring":
        raise invalid(
            param,
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
        )
    if not price["active"]:
        raise invalid(param, "The price specified is inactive. This field only accepts active prices.")
    return price


def _item_change(sub: dict, i: int, it: Params) -> tuple:
    """One ``items[i]`` entry as the engine's change ``(item or None, price, quantity, deleted)``."""
    item_id = it.str("id")
    item = None
    if item_id:
        item = next((x for x in sub["items"]["data"] if x["id"] == item_id), None)
        if item is None:
            raise no_such("subscription_item", item_id, param=f"items[{i}][id]", status=400)
    deleted = bool(it.bool("deleted"))
    price_id = it.str("price")
    if price_id:
        price = _recurring_price(price_id, f"items[{i}][price]")
    elif item is not None:
        price = item["price"]
    elif not deleted:
        raise missing_param(f"items[{i}][price]")
    else:  # deleting needs the item's id
        raise missing_param(f"items[{i}][id]")
    qty = it.int("quantity", minimum=0)
    if qty is None:
        qty = item["quantity"] if item is not None else 1
    it.ignore("metadata", "tax_rates", "discounts", "billing_thresholds", "price_data")
    it.done()
    if price["currency"] != sub["currency"]:
        raise invalid(f"items[{i}][price]", "The price's currency must match the subscription's currency.")
    return item, price, qty, deleted


def _cancellation_details(p: Params) -> tuple:
    """``cancellation_details[comment|feedback]`` as (comment, feedback), each None when not given."""
    details = p.dict("cancellation_details")
    if not details:
        return None, None
    comment = details.str("comment", empty_ok=True)
    feedback = details.str("feedback", choices=FEEDBACK)
    details.done()
    return comment, feedback


def _plain_fields(p: Params, sub: dict) -> dict:
    """The fields an update sets as given: ``default_payment_method`` (the customer's own) and ``description``."""
    fields = {}
    if p.has("default_payment_method"):
        dpm = p.str("default_payment_method")
        if dpm:
            pm = store().get("payment_methods", dpm)
            if pm is None or pm["customer"] != sub["customer"]:
                raise no_such("PaymentMethod", dpm, param="default_payment_method", status=400)
        fields["default_payment_method"] = dpm
    if p.has("description"):
        fields["description"] = p.str("description")
    return fields


def _refuse_if_payment_fails(
    ctx: Ctx, sub: dict, changes: list, proration: str, proration_date: int | None = None
) -> tuple[dict, list]:
    """``payment_behavior=error_if_incomplete``: Stripe refuses the whole update when the immediate payment
    fails, so the invoice is previewed before anything changes. Answers (sub, changes) re-read from the
    state, which the preview restored from a copy."""
    s, e = store(), engine()
    preview = e.preview(ctx, sub, changes, proration, proration_date)
    if preview["billing_reason"] == "subscription_update" and e.would_decline(
        sub["default_payment_method"]
        or s.must("customers", sub["customer"])["invoice_settings"]["default_payment_method"],
        preview["amount_due"],
    ):
        raise StripeError(
            "Your card was declined.",
            status=402,
            type="card_error",
            code="card_declined",
            decline_code="generic_decline",
        )
    sub = s.must("subscriptions", sub["id"])
    changes = [
        (next((i for i in sub["items"]["data"] if item and i["id"] == item["id"]), None), price, qty, deleted)
        for item, price, qty, deleted in changes
    ]
    return sub, changes


def _set_cancel_at(ctx: Ctx, sub: dict, cancel_at) -> None:
    """``cancel_at=<unix>|min_period_end|max_period_end`` schedules the end; ``cancel_at=`` clears it."""
    s, e = store(), engine()
    if cancel_at == "":
        if sub["cancel_at"]:
            e.set_cancel_at_period_end(ctx, sub, False)
        return
    try:
        when = int(cancel_at)
    except (TypeError, ValueError):
        if cancel_at in ("min_period_end", "max_period_end"):
            when = e.period(sub)[1]
        else:
            raise invalid("cancel_at", f"Invalid integer: {cancel_at}") from None
    if when <= s.now():
        raise invalid("cancel_at", "cancel_at must be in the future.")
    before = copy.deepcopy(sub)
    sub["cancel_at"] = when
    sub["cancel_at_period_end"] = when == e.period(sub)[1]
    sub["canceled_at"] = s.now()
    sub["cancellation_details"]["reason"] = "cancellation_requested"
    e.emit_update(ctx, "customer.subscription.updated", before, sub)


@api(bp, "/v1/subscriptions/<sub_id>", ["POST"])
def update_subscription(p: Params, ctx: Ctx, sub_id: str):
    """Item changes with proration, cancellation, metadata, payment method, all in Stripe's event order."""
    e = engine()
    sub = get_or_404("subscriptions", "subscription", sub_id)
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise StripeError("A canceled subscription can only update its cancellation_details and metadata.", param=None)
    proration = p.str("proration_behavior", choices=PRORATIONS) or "create_prorations"
    anchor = p.str("billing_cycle_anchor", choices=["now", "unchanged"])
    payment_behavior = p.str(
        "payment_behavior",
        choices=["allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"],
    )
    proration_date = p.int("proration_date", minimum=0)
    p.ignore("off_session")
    changes = [_item_change(sub, i, it) for i, it in enumerate(p.list_of_dicts("items") or [])]
    cape = p.bool("cancel_at_period_end")
    cancel_at = p.raw("cancel_at")
    comment, feedback = _cancellation_details(p)
    metadata = p.metadata()
    fields = _plain_fields(p, sub)
    p.ignore(
        "pause_collection",
        "collection_method",
        "days_until_due",
        "default_tax_rates",
        "discounts",
        "payment_settings",
        "trial_end",
        "trial_from_plan",
        "promotion_code",
        "invoice_settings",
        "automatic_tax",
        "billing_thresholds",
        "on_behalf_of",
        "transfer_data",
        "pending_invoice_item_interval",
        "application_fee_percent",
        "default_source",
    )
    p.done()
    if sub["schedule"] and (cape is not None or cancel_at is not None):
        # Stripe: a schedule owns the subscription's end; release the schedule (or update it) instead.
        raise StripeError(
            f"The subscription is managed by the subscription schedule `{sub['schedule']}`, and "
            "updating any cancelation behavior directly is not allowed. Please update the "
            "schedule instead."
        )
    if changes:
        e.check_proration_date(sub, proration_date, "proration_date")
    if changes and payment_behavior == "error_if_incomplete":
        sub, changes = _refuse_if_payment_fails(ctx, sub, changes, proration, proration_date)
    # Plain field changes first, as one customer.subscription.updated.
    before = copy.deepcopy(sub)
    if metadata is not None:
        sub["metadata"] = merge_metadata(sub["metadata"], metadata)
    sub.update(fields)
    if before != sub:
        e.emit_update(ctx, "customer.subscription.updated", before, sub)
    if changes:
        e.change_items(ctx, sub, changes, proration, anchor, proration_date)
    if cancel_at is not None:
        _set_cancel_at(ctx, sub, cancel_at)
    if cape is not None or comment is not None or feedback is not None:
        flag = sub["cancel_at_period_end"] if cape is None else cape
        e.set_cancel_at_period_end(ctx, sub, flag, comment=comment, feedback=feedback)
    return sub


@api(bp, "/v1/subscriptions/<sub_id>", ["DELETE"])
def cancel_subscription(p: Params, ctx: Ctx, sub_id: str):
    """End the subscription now."""
    sub = get_or_404("subscriptions", "subscription", sub_id)
    details = p.dict("cancellation_details")
    comment = feedback = None
    if details:
        comment = details.str("comment", empty_ok=True)
        feedback = details.str("feedback")
        details.done()
    p.bool("invoice_now")
    p.bool("prorate")
    p.done()
    if sub["status"] == "canceled":
        raise StripeError(f"No such subscription: '{sub_id}'", status=404, code="resource_missing", param="id")
    return engine().cancel_now(ctx, sub, comment=comment, feedback=feedback)


@api(bp, "/v1/subscription_items", ["GET"])
def list_subscription_items(p: Params, ctx: Ctx):
    """The items of one ``subscription``."""
    sub_id = p.str("subscription", required=True)
    sub = get_or_404("subscriptions", "subscription", sub_id, param="subscription", status=400)
    p.done()
    return paginate(list(sub["items"]["data"]), p, "/v1/subscription_items")  # the filter is not in Stripe's url
