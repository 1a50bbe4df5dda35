"""Subscription schedules: create ``from_subscription``, retrieve, list, update ``phases``, release.

Phases are run by the billing engine as the clock passes their end dates.
"""

from __future__ import annotations

import copy

from flask import Blueprint

from .. import billing, objects
from ..billing import Ctx
from ..errors import StripeError, invalid, missing_param, no_such
from ..listing import get_or_404, newest_first, paginate
from ..params import Params, merge_metadata
from ..plumbing import api, engine, store
from ..store import new_id

bp = Blueprint("subscription_schedules", __name__)


def _phase_end(price: dict, start: int, iterations: int) -> int:
    """Where a phase of ``iterations`` billing periods of ``price`` ends."""
    rec = price["recurring"]
    return billing.add_interval(start, rec["interval"], rec["interval_count"], iterations)


@api(bp, "/v1/subscription_schedules", ["POST"])
def create_subscription_schedule(p: Params, ctx: Ctx):
    """A schedule taking over a live subscription, its first phase the current period."""
    s = store()
    sub_id = p.str("from_subscription")
    if not sub_id:
        raise invalid("from_subscription", "The emulator creates schedules from_subscription only.")
    sub = get_or_404("subscriptions", "subscription", sub_id, param="from_subscription", status=400)
    if sub["schedule"]:
        raise invalid(
            "from_subscription",
            f"You cannot migrate a subscription that is already attached to a schedule: `{sub['schedule']}`.",
        )
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise invalid("from_subscription", "You cannot migrate a canceled subscription.")
    p.ignore("metadata")
    p.done()
    start, end = engine().period(sub)
    phase = objects.schedule_phase(
        [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]], start, end, sub["currency"]
    )
    sched = objects.subscription_schedule(new_id("sub_sched", 24), s.now(), sub, [phase])
    s.put("subscription_schedules", sched)
    before = copy.deepcopy(sub)
    sub["schedule"] = sched["id"]
    engine().emit(ctx, "subscription_schedule.created", sched)
    engine().emit_update(ctx, "customer.subscription.updated", before, sub)
    return sched


@api(bp, "/v1/subscription_schedules", ["GET"])
def list_subscription_schedules(p: Params, ctx: Ctx):
    """Schedules newest first, by customer."""
    items = newest_first(store().coll("subscription_schedules"))
    cid = p.str("customer")
    if cid:
        items = [o for o in items if o["customer"] == cid]
    p.ignore("scheduled", "released_at", "completed_at", "canceled_at", "created")
    p.done()
    return paginate(items, p, "/v1/subscription_schedules")


@api(bp, "/v1/subscription_schedules/<sched_id>", ["GET"])
def retrieve_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
    """One schedule."""
    p.done()
    return get_or_404("subscription_schedules", "subscription_schedule", sched_id)


def _phase_items(ph: Params, name: str) -> list[tuple[str, int]]:
    """``phases[i][items]`` as (price id, quantity) pairs."""
    specs = []
    for j, it in enumerate(ph.list_of_dicts("items", required=True)):
        price_id = it.str("price", required=True)
        if store().get("prices", price_id) is None:
            raise no_such("price", price_id, param=f"{name}[items][{j}][price]", status=400)
        specs.append((price_id, it.int("quantity", minimum=1) or 1))
        it.ignore("metadata", "tax_rates", "discounts", "billing_thresholds")
        it.done()
    return specs


def _phase_start(ph: Params, prev_end, current_start: int) -> int:
    """``start_date`` (a unix time or ``now``); by default where the previous phase ends, or the current start."""
    raw_start = ph.raw("start_date")
    if raw_start == "now":
        return store().now()
    if raw_start not in (None, ""):
        return ph.int("start_date", required=True)
    return prev_end if prev_end is not None else current_start


def _phases(phases_in: list, sched: dict) -> list[dict]:
    """``phases``: past phases may be left out, so the first phase given is the current one, its start unchanged."""
    current_start = (sched["current_phase"] or sched["phases"][0])["start_date"]
    phases = []
    prev_end = None
    for i, ph in enumerate(phases_in):
        name = f"phases[{i}]"
        specs = _phase_items(ph, name)
        start = _phase_start(ph, prev_end, current_start)
        if i == 0 and start != current_start and sched["status"] == "active":
            raise invalid(f"{name}[start_date]", "You can not modify the start date of the current phase.")
        if ph.has("end_date"):
            end = ph.int("end_date", required=True)
        else:
            end = _phase_end(store().must("prices", specs[0][0]), start, ph.int("iterations", minimum=1) or 1)
        if end <= start:
            raise invalid(f"{name}[end_date]", "The end date must be after the start date.")
        prorate = ph.str("proration_behavior", choices=["create_prorations", "always_invoice", "none"])
        ph.ignore(
            "metadata",
            "default_tax_rates",
            "billing_cycle_anchor",
            "collection_method",
            "default_payment_method",
            "description",
            "invoice_settings",
            "trial_end",
            "automatic_tax",
            "discounts",
            "add_invoice_items",
            "currency",
        )
        ph.done()
        phases.append(objects.schedule_phase(specs, start, end, proration_behavior=prorate or "create_prorations"))
        prev_end = end
    if not phases:
        raise missing_param("phases")
    return phases


@api(bp, "/v1/subscription_schedules/<sched_id>", ["POST"])
def update_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
    """New ``phases`` (the first one given is the current one) and metadata of a live schedule."""
    sched = get_or_404("subscription_schedules", "subscription_schedule", sched_id)
    if sched["status"] not in ("active", "not_started"):
        raise StripeError(f"You cannot update a subscription schedule that is {sched['status']}.")
    before = copy.deepcopy(sched)
    end_behavior = p.str("end_behavior", choices=["release", "cancel", "none", "renew"])
    if end_behavior and end_behavior != "release":
        raise invalid("end_behavior", "The emulator supports end_behavior=release only.")
    phases_in = p.list_of_dicts("phases")
    if phases_in is not None:
        phases = _phases(phases_in, sched)
        sched["phases"] = phases
        sched["current_phase"] = {"start_date": phases[0]["start_date"], "end_date": phases[0]["end_date"]}
    sched["metadata"] = merge_metadata(sched["metadata"], p.metadata())
    p.ignore("default_settings", "proration_behavior")
    p.done()
    engine().emit_update(ctx, "subscription_schedule.updated", before, sched)
    return sched


@api(bp, "/v1/subscription_schedules/<sched_id>/release", ["POST"])
def release_subscription_schedule(p: Params, ctx: Ctx, sched_id: str):
    """Detach the schedule; the subscription carries on with its current items."""
    s = store()
    sched = get_or_404("subscription_schedules", "subscription_schedule", sched_id)
    p.ignore("preserve_cancel_date")
    p.done()
    if sched["status"] not in ("active", "not_started"):
        raise StripeError(
            f"You cannot release a subscription schedule that is currently in the `{sched['status']}` status."
        )
    sub = s.must("subscriptions", sched["subscription"])
    sched.update(
        {"status": "released", "released_at": s.now(), "released_subscription": sub["id"], "current_phase": None}
    )
    before = copy.deepcopy(sub)
    sub["schedule"] = None
    engine().emit(ctx, "subscription_schedule.released", sched)
    engine().emit_update(ctx, "customer.subscription.updated", before, sub)
    return sched
