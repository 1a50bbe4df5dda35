"""Hosted pages a person (or Playwright) can use: Checkout, the customer portal, invoices.

They call the same billing engine as the API, so paying on the page and
paying through ``/_emulator/checkout/<id>/complete`` produce the same objects
and events.
"""

from __future__ import annotations

import copy
import datetime as dt
from fractions import Fraction
from urllib.parse import quote

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from . import objects
from .billing import Ctx, add_interval
from .errors import StripeError
from .pdf import render_pdf
from .plumbing import base_url, emu
from .store import new_id

bp = Blueprint("pages", __name__, template_folder="templates")

FEEDBACK_LABELS = {
    "customer_service": "Customer service was less than expected",
    "low_quality": "Quality was less than expected",
    "missing_features": "Some features are missing",
    "other": "Other reason",
    "switched_service": "I'm switching to a different service",
    "too_complex": "Ease of use was less than expected",
    "too_expensive": "It's too expensive",
    "unused": "I don't use the service enough",
}

FLOW_SECTIONS = {
    "payment_method_update": "payment_method",
    "subscription_cancel": "cancel",
    "subscription_update": "update",
    "subscription_update_confirm": "update",
}


@bp.app_template_filter("money")
def money_filter(amount, currency="usd"):
    """Cents as money, e.g. ``$19.99``."""
    return objects.money(int(amount or 0), currency or "usd")


@bp.app_template_filter("date")
def date_filter(ts):
    """A unix time as a UTC date, e.g. ``March 5, 2027``."""
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%B %-d, %Y")


@bp.app_template_filter("interval")
def interval_filter(price):
    """A recurring price's interval in words."""
    rec = (price or {}).get("recurring") or {}
    if not rec:
        return ""
    count = rec.get("interval_count", 1)
    return f"per {rec['interval']}" if count == 1 else f"every {count} {rec['interval']}s"


def business_name() -> str:
    """The account's public business name, as Stripe's hosted pages name the merchant."""
    return objects.ACCOUNT_NAME.replace(" (emulator)", "")


def not_found_page():
    """The hosted pages' 404."""
    return render_template(
        "message.html", title="Page not found", message="This link is not valid or has expired."
    ), 404


def _card_fields(form) -> dict:
    """The card form's number, expiry and CVC; a bad expiry or CVC is Stripe's card error."""
    expiry = (form.get("card_expiry") or "12 / 34").replace(" ", "")
    month, _, year = expiry.partition("/")
    try:
        exp_month = int(month)
        exp_year = int(year) + (2000 if len(year) == 2 else 0)
        if not 1 <= exp_month <= 12:
            raise ValueError
    except ValueError:
        raise StripeError(
            "Your card's expiration date is invalid.",
            status=402,
            type="card_error",
            code="invalid_expiry_month",
            param="exp_month",
        ) from None
    cvc = (form.get("card_cvc") or "").strip()
    if not cvc.isdigit() or len(cvc) not in (3, 4):
        raise StripeError(
            "Your card's security code is incomplete.",
            status=402,
            type="card_error",
            code="incomplete_cvc",
            param="cvc",
        )
    return {
        "card": form.get("card_number", ""),
        "exp_month": exp_month,
        "exp_year": exp_year,
        "name": (form.get("card_name") or "").strip() or None,
    }


# ====================================================================== checkout
def _checkout_context(cs: dict) -> dict:
    """What the Checkout template shows of a session."""
    store = emu().store
    lines = store.internal("line_items").get(cs["id"], [])
    first = lines[0] if lines else None
    product = store.get("products", first["price"]["product"]) if first else None
    return {
        "cs": cs,
        "lines": lines,
        "first": first,
        "product": product,
        "business": business_name(),
    }


@bp.get("/c/pay/<cs_id>")
def checkout_page(cs_id: str):
    """Hosted Checkout for an open session; a paid or expired one says so."""
    e = emu()
    with e.store.lock:
        cs = e.store.get("checkout_sessions", cs_id)
        if cs is None:
            return not_found_page()
        cs = copy.deepcopy(cs)
        ctx = _checkout_context(cs)
    if cs["status"] != "open":
        title = "Already paid" if cs["status"] == "complete" else "This checkout session has expired"
        return render_template(
            "message.html", title=title, back_url=cs.get("cancel_url"), message="You can close this page."
        ), 410 if cs["status"] == "expired" else 200
    return render_template("checkout.html", error=None, form={}, **ctx)


@bp.post("/c/pay/<cs_id>")
def checkout_pay(cs_id: str):
    """Pay with the card form; a decline renders the form again with Stripe's message."""
    e = emu()
    form = request.form
    with e.store.lock:
        cs = e.store.get("checkout_sessions", cs_id)
        if cs is None:
            return not_found_page()
        try:
            fields = _card_fields(form)
            e.billing.complete_checkout(
                Ctx(base_url()),
                cs,
                fields["card"],
                email=form.get("email") or None,
                name=fields["name"],
                exp_month=fields["exp_month"],
                exp_year=fields["exp_year"],
            )
        except StripeError as err:
            e.store.save()
            ctx = _checkout_context(copy.deepcopy(cs))
            return render_template("checkout.html", error=err.message, form=form, **ctx), err.status
        e.store.save()
        success_url = cs["success_url"]
    if success_url:
        return redirect(success_url.replace("{CHECKOUT_SESSION_ID}", cs_id), 303)
    return render_template(
        "message.html", title="Thanks for your payment", message="Your subscription is active. You can close this page."
    )


# ====================================================================== portal
def _portal_or_404(bps_id: str):
    """The portal session, or 404."""
    sess = emu().store.get("portal_sessions", bps_id)
    if sess is None:
        abort(404)
    return sess


def _customer_sub(sess: dict, sub_id: str) -> dict:
    """One of the session customer's subscriptions, or 404."""
    sub = emu().store.get("subscriptions", sub_id)
    if sub is None or sub["customer"] != sess["customer"]:
        abort(404)
    return sub


def _configuration(sess: dict) -> dict:
    """The configuration the portal session uses (its ``configuration``, else the default)."""
    s = emu().store
    return s.get("portal_configurations", sess.get("configuration")) or s.must(
        "portal_configurations", objects.DEFAULT_PORTAL_CONFIGURATION
    )


def _features(sess: dict) -> dict:
    """The features of the session's configuration."""
    return _configuration(sess)["features"]


def _pending_change(sub: dict) -> dict | None:
    """The next phase of the subscription's schedule, as the portal announces it: the product, its price and
    the date it starts; None without a schedule or a later phase."""
    s = emu().store
    sched = emu().billing.active_schedule(sub)
    if sched is None:
        return None
    ends = sched["current_phase"]["end_date"]
    nxt = next(
        (ph for ph in sorted(sched["phases"], key=lambda ph: ph["start_date"]) if ph["start_date"] >= ends), None
    )
    if nxt is None or not nxt["items"]:
        return None
    price = s.must("prices", nxt["items"][0]["price"])
    product = s.get("products", price["product"]) or {}
    return {"product": product.get("name") or price["product"], "price": price, "at": nxt["start_date"]}


def _scheduled_for_period_end(update: dict, item: dict, price: dict) -> bool:
    """Whether the configuration's ``schedule_at_period_end`` conditions hold for a switch from ``item`` to
    ``price`` (any one of them is enough, as Stripe's docs put it: "when any condition is true, the update will be
    scheduled at the end of the current period"):

    - ``decreasing_item_amount``: the item costs less *for the same length of time* — amounts of prices with
      different intervals are compared per year (a $199.99 yearly price is cheaper than a $19.99 monthly one,
      $239.88 a year, even though its unit amount is larger). Stripe's reference names the condition only; this
      normalised reading is the emulator's, kept in step with the app's `scheduled_at_period_end`;
    - ``shortening_interval``: the new price's interval is shorter (yearly to monthly).
    """
    conditions = {c["type"] for c in (update.get("schedule_at_period_end") or {}).get("conditions") or []}
    old = item["price"]
    quantity = item["quantity"]
    cheaper = _per_year(price) * quantity < _per_year(old) * quantity
    shorter = _interval_days(price) < _interval_days(old)
    return ("decreasing_item_amount" in conditions and cheaper) or ("shortening_interval" in conditions and shorter)


#: How many of each billing interval make a year (months exactly; days and weeks on a 365-day year).
PER_YEAR = {"day": Fraction(365), "week": Fraction(365, 7), "month": Fraction(12), "year": Fraction(1)}

#: The rough length of a billing interval, to tell which of two is shorter.
INTERVAL_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


def _per_year(price: dict) -> Fraction:
    """What a recurring price costs over a year, in its currency's smallest unit (exact, as a fraction)."""
    rec = price["recurring"]
    return Fraction(price["unit_amount"]) * PER_YEAR[rec["interval"]] / (rec.get("interval_count") or 1)


def _interval_days(price: dict) -> int:
    rec = price["recurring"]
    return INTERVAL_DAYS.get(rec["interval"], 0) * (rec.get("interval_count") or 1)


#: A billing interval as an adjective: "switching to yearly billing".
BILLING_WORDS = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}


def _billing_word(price: dict) -> str:
    rec = price["recurring"]
    count = rec.get("interval_count") or 1
    return BILLING_WORDS.get(rec["interval"], rec["interval"]) if count == 1 else f"{count}-{rec['interval']}"


def _interval_switch_terms(update: dict, item: dict, prices: list, period_end: int) -> list[str]:
    """What the Update plan terms say of a switch to another billing interval, a sentence for each interval offered.
    Worked out price by price with the rule the switch itself follows (``_scheduled_for_period_end``, whatever the
    configuration's conditions), so the terms cannot say "invoiced today" of a switch that waits, or the reverse. A
    switch made now restarts the billing period and is invoiced at once (``Billing.change_items``)."""
    current = _interval_days(item["price"])
    outcomes: dict[str, tuple[list[str], list[str]]] = {}
    for price in prices:
        if _interval_days(price) == current:
            continue
        later, now = outcomes.setdefault(_billing_word(price), ([], []))
        name = emu().store.must("products", price["product"])["name"]
        (later if _scheduled_for_period_end(update, item, price) else now).append(name)
    sentences = []
    when = f"at the end of your billing period on {date_filter(period_end)}"
    credit = "" if update.get("proration_behavior") == "none" else ", less the unused time on your current plan"
    for word, (later, now) in outcomes.items():
        if not now:
            sentences.append(f"Switching to {word} billing starts {when}; nothing is charged today.")
        elif not later:
            sentences.append(
                f"Switching to {word} billing takes effect now: your billing period restarts today and the new price "
                f"is invoiced today{credit}."
            )
        else:
            sentences.append(
                f"Switching to {word} billing starts {when} for {' and '.join(later)}, and takes effect now, invoiced "
                f"today{credit}, for {' and '.join(now)}."
            )
    return sentences


def _schedule_switch(ctx: Ctx, sub: dict, price: dict) -> None:
    """Switch to ``price`` at the end of the period, as Stripe's portal does under ``schedule_at_period_end``:
    the subscription's schedule (created from it when it has none) gets a next phase with the new price."""
    e = emu()
    s = e.store
    start, end = e.billing.period(sub)
    item = sub["items"]["data"][0]
    current = objects.schedule_phase([(item["price"]["id"], item["quantity"])], start, end, sub["currency"])
    rec = price["recurring"]
    following = objects.schedule_phase(
        [(price["id"], item["quantity"])],
        end,
        add_interval(end, rec["interval"], rec["interval_count"], 1),
        sub["currency"],
    )
    sched = e.billing.active_schedule(sub)
    if sched is None:
        sched = objects.subscription_schedule(new_id("sub_sched", 24), s.now(), sub, [current, following])
        s.put("subscription_schedules", sched)
        before = copy.deepcopy(sub)
        sub["schedule"] = sched["id"]
        e.billing.emit(ctx, "subscription_schedule.created", sched)
        e.billing.emit_update(ctx, "customer.subscription.updated", before, sub)
        return
    before_sched = copy.deepcopy(sched)
    sched["phases"] = [current, following]
    sched["current_phase"] = {"start_date": start, "end_date": end}
    e.billing.emit_update(ctx, "subscription_schedule.updated", before_sched, sched)


def _offered_prices(features: dict) -> list:
    """The prices the configuration lets a customer switch to: its products' active recurring prices."""
    update = features["subscription_update"]
    if not update["enabled"]:
        return []
    s = emu().store
    prices = [s.get("prices", price_id) for entry in update["products"] or [] for price_id in entry["prices"]]
    prices = [
        p
        for p in prices
        if p and p["active"] and p["type"] == "recurring" and (s.get("products", p["product"]) or {}).get("active")
    ]
    return sorted(prices, key=lambda p: (p["unit_amount"], p["recurring"]["interval"] != "month"))


def _confirmation(sess: dict, sub: dict, features: dict, price_id: str) -> dict:
    """What the confirmation step shows before a switch to ``price_id`` is applied: the new price, and either the
    date a switch scheduled at period end starts or the previewed invoice (charged today when the switch invoices
    at once, else the next one, with its prorations). Nothing changes: the preview runs on a copy of the state.
    A price the configuration does not offer, or the current one, is refused (400) as the update itself is."""
    e = emu()
    price = e.store.get("prices", price_id)
    item = sub["items"]["data"][0]
    if (
        price is None
        or price not in _offered_prices(features)
        or price["id"] == item["price"]["id"]
        or sub["status"] == "canceled"
    ):
        abort(400)
    update = features["subscription_update"]
    confirm = {
        "price": copy.deepcopy(price),
        "product": e.store.must("products", price["product"])["name"],
        "later": _scheduled_for_period_end(update, item, price),
        "period_end": e.billing.period(sub)[1],
        "invoice": None,
    }
    if not confirm["later"]:
        inv = e.billing.preview(
            Ctx(base_url()), sub, [(item, price, item["quantity"], False)], update["proration_behavior"]
        )
        confirm["invoice"] = inv
        confirm["due_now"] = inv["billing_reason"] == "subscription_update"
    return confirm


def _allowed(features: dict, feature: str) -> None:
    """A portal action the configuration turns off is refused (403), whatever the form says."""
    if not features[feature]["enabled"]:
        abort(403)


@bp.get("/p/session/<bps_id>")
def portal_page(bps_id: str):
    """The portal: plans, renewal, card, invoices; ``flow_data`` picks the section shown first."""
    e = emu()
    with e.store.lock:
        sess = copy.deepcopy(_portal_or_404(bps_id))
        s = e.store
        cust = copy.deepcopy(s.must("customers", sess["customer"]))
        subs = [
            copy.deepcopy(x)
            for x in reversed(list(s.coll("subscriptions").values()))
            if x["customer"] == cust["id"] and x["status"] not in ("canceled", "incomplete_expired")
        ]
        pm_id = cust["invoice_settings"]["default_payment_method"]
        pm = copy.deepcopy(s.get("payment_methods", pm_id)) if pm_id else None
        invoices = [
            objects.public_urls(copy.deepcopy(i), base_url())
            for i in reversed(list(s.coll("invoices").values()))
            if i["customer"] == cust["id"] and i["status"] != "draft"
        ]
        products = {p["id"]: p for p in s.coll("products").values()}
        features = copy.deepcopy(_features(sess))
        prices = _offered_prices(features)
        for sub in subs:
            sub["_period_end"] = min(i["current_period_end"] for i in sub["items"]["data"])
            sub["_product"] = products.get(sub["items"]["data"][0]["price"]["product"])
            sub["_pending"] = copy.deepcopy(_pending_change(sub))
            sub["_interval_terms"] = _interval_switch_terms(
                features["subscription_update"], sub["items"]["data"][0], prices, sub["_period_end"]
            )
        headline = _configuration(sess)["business_profile"].get("headline")
        flow = sess.get("flow") or {}
        # A ``subscription_update_confirm`` flow opens straight on the confirmation of its item's price.
        flow_price = ((flow.get("subscription_update_confirm") or {}).get("items") or [{}])[0].get("price")
        section = request.args.get("section") or FLOW_SECTIONS.get(flow.get("type") or "", "home")
        if flow_price and not request.args.get("section"):
            section = "confirm"
        flow_sub = None
        if flow.get("type") and flow.get(flow["type"]):
            flow_sub = flow[flow["type"]].get("subscription")
        focus_sub = request.args.get("sub") or flow_sub or (subs[0]["id"] if subs else None)
        confirm = None
        if section == "confirm":  # Select on the plan list: show the change, apply it only on Confirm
            _allowed(features, "subscription_update")
            sub = _customer_sub(sess, focus_sub or "")
            confirm = _confirmation(sess, sub, features, request.args.get("price") or flow_price or "")
    return render_template(
        "portal.html",
        sess=sess,
        customer=cust,
        subs=subs,
        pm=pm,
        invoices=invoices,
        prices=prices,
        products=products,
        section=section,
        focus_sub=focus_sub,
        confirm=confirm,
        features=features,
        feedback_labels=FEEDBACK_LABELS,
        notice=request.args.get("notice"),
        error=request.args.get("error"),
        headline=headline,
        business=business_name(),
    )


def _after_portal_action(sess: dict, notice: str):
    """Back to the portal home with a notice, or to the flow's redirect."""
    flow = sess.get("flow") or {}
    after = flow.get("after_completion") or {}
    if flow and after.get("type") == "redirect" and after.get("redirect"):
        return redirect(after["redirect"]["return_url"], 303)
    return redirect(url_for("pages.portal_page", bps_id=sess["id"], section="home", notice=notice), 303)


@bp.post("/p/session/<bps_id>/update")
def portal_update(bps_id: str):
    """Switch to another catalog price, prorated (the confirmation step's Confirm button posts here)."""
    e = emu()
    with e.store.lock:
        sess = _portal_or_404(bps_id)
        sub = _customer_sub(sess, request.form.get("subscription", ""))
        features = _features(sess)
        _allowed(features, "subscription_update")
        price = e.store.get("prices", request.form.get("price", ""))
        if price is None or price not in _offered_prices(features) or sub["status"] == "canceled":
            abort(400)
        item = sub["items"]["data"][0]
        update = features["subscription_update"]
        prod = e.store.must("products", price["product"])
        amount = f"{objects.money(price['unit_amount'])} {interval_filter(price)}"
        notice = f"Your plan was changed to {prod['name']} ({amount})."
        if item["price"]["id"] != price["id"]:
            if _scheduled_for_period_end(update, item, price):
                _schedule_switch(Ctx(base_url()), sub, price)
                # The plan card says what comes and when (`_pending_change`); the notice says what stays until then.
                kept = e.store.must("products", item["price"]["product"])["name"]
                notice = f"Change scheduled: you keep {kept} until {date_filter(e.billing.period(sub)[1])}."
            else:
                e.billing.change_items(
                    Ctx(base_url()), sub, [(item, price, item["quantity"], False)], update["proration_behavior"]
                )
            e.store.save()
    return _after_portal_action(sess, notice)


@bp.post("/p/session/<bps_id>/cancel")
def portal_cancel(bps_id: str):
    """Cancel as the configuration says: at the end of the period, or at once when its mode is ``immediately``."""
    e = emu()
    with e.store.lock:
        sess = _portal_or_404(bps_id)
        sub = _customer_sub(sess, request.form.get("subscription", ""))
        cancel = _features(sess)["subscription_cancel"]
        _allowed(_features(sess), "subscription_cancel")
        reasons = cancel["cancellation_reason"]
        feedback = request.form.get("feedback") or None
        if feedback and not (reasons["enabled"] and feedback in reasons["options"]):
            abort(400)
        if cancel["mode"] == "immediately":
            e.billing.cancel_now(Ctx(base_url()), sub, feedback=feedback)
            notice = "Your plan was canceled."
        else:
            e.billing.set_cancel_at_period_end(Ctx(base_url()), sub, True, feedback=feedback)
            notice = f"Your plan will be canceled on {date_filter(sub['cancel_at'])}."
        e.store.save()
    return _after_portal_action(sess, notice)


@bp.post("/p/session/<bps_id>/resume")
def portal_resume(bps_id: str):
    """Undo a cancellation at period end."""
    e = emu()
    with e.store.lock:
        sess = _portal_or_404(bps_id)
        sub = _customer_sub(sess, request.form.get("subscription", ""))
        e.billing.set_cancel_at_period_end(Ctx(base_url()), sub, False)
        e.store.save()
    return _after_portal_action(sess, "Your plan was renewed.")


@bp.post("/p/session/<bps_id>/payment_method")
def portal_payment_method(bps_id: str):
    """Replace the card; like Stripe's portal it also pays the customer's open invoices."""
    e = emu()
    with e.store.lock:
        sess = _portal_or_404(bps_id)
        _allowed(_features(sess), "payment_method_update")
        cust = e.store.must("customers", sess["customer"])
        ctx = Ctx(base_url())
        try:
            fields = _card_fields(request.form)
            pm = e.billing.add_card(
                ctx,
                cust,
                fields["card"],
                exp_month=fields["exp_month"],
                exp_year=fields["exp_year"],
                name=fields["name"],
            )
        except StripeError as err:
            return redirect(
                url_for("pages.portal_page", bps_id=bps_id, section="payment_method", error=err.message), 303
            )
        for sub in e.store.coll("subscriptions").values():
            if sub["customer"] == cust["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
                before = copy.deepcopy(sub)
                sub["default_payment_method"] = pm["id"]
                e.billing.emit_update(ctx, "customer.subscription.updated", before, sub)
        # Like Stripe's portal "pay now": settle open invoices with the new card.
        for inv_id in list(e.store.internal("retries")):
            inv = e.store.get("invoices", inv_id)
            if inv and inv["customer"] == cust["id"] and inv["status"] == "open":
                e.store.internal("retries").pop(inv_id, None)
                e.billing.retry_invoice(ctx, inv)
        e.store.save()
        notice = f"Your payment method was updated to {pm['card']['brand'].title()} •••• {pm['card']['last4']}."
    return _after_portal_action(sess, notice)


ADDRESS_FIELDS = ("line1", "line2", "city", "postal_code", "state", "country")


def _billing_details(form, allowed: list) -> dict:
    """The customer fields the billing-information form sets, limited to the configuration's ``allowed_updates``."""
    fields: dict = {}
    for key in ("name", "email", "phone"):
        if key in allowed and key in form:
            fields[key] = form.get(key, "").strip() or None
    if fields.get("email") is not None and "@" not in fields["email"]:
        raise StripeError(f"Invalid email address: {fields['email']}", param="email")
    if "address" in allowed and any(f"address_{k}" in form for k in ADDRESS_FIELDS):
        address = {k: form.get(f"address_{k}", "").strip() or None for k in ADDRESS_FIELDS}
        fields["address"] = address if any(address.values()) else None
    return fields


@bp.post("/p/session/<bps_id>/customer")
def portal_customer(bps_id: str):
    """Edit billing information (name, email, address, phone) as far as ``customer_update`` allows;
    the customer is updated and ``customer.updated`` sent, as the API's update does."""
    e = emu()
    with e.store.lock:
        sess = _portal_or_404(bps_id)
        features = _features(sess)
        _allowed(features, "customer_update")
        cust = e.store.must("customers", sess["customer"])
        try:
            fields = _billing_details(request.form, features["customer_update"]["allowed_updates"])
        except StripeError as err:
            return redirect(url_for("pages.portal_page", bps_id=bps_id, section="billing", error=err.message), 303)
        before = copy.deepcopy(cust)
        cust.update(fields)
        e.billing.emit_update(Ctx(base_url()), "customer.updated", before, cust)
        e.store.save()
    return _after_portal_action(sess, "Your billing information was updated.")


# ====================================================================== invoices
@bp.get("/i/<in_id>")
def invoice_page(in_id: str):
    """The hosted invoice page."""
    e = emu()
    with e.store.lock:
        inv = e.store.get("invoices", in_id)
        if inv is None:
            return not_found_page()
        inv = objects.public_urls(copy.deepcopy(inv), base_url())
    return render_template(
        "invoice.html",
        inv=inv,
        error=request.args.get("error"),
        business=business_name(),
    )


@bp.post("/i/<in_id>/pay")
def invoice_pay(in_id: str):
    """Pay an open invoice with a new card from the form."""
    e = emu()
    with e.store.lock:
        inv = e.store.get("invoices", in_id)
        if inv is None:
            return not_found_page()
        if inv["status"] == "open":
            ctx = Ctx(base_url())
            cust = e.store.must("customers", inv["customer"])
            try:
                fields = _card_fields(request.form)
                e.billing.add_card(
                    ctx,
                    cust,
                    fields["card"],
                    exp_month=fields["exp_month"],
                    exp_year=fields["exp_year"],
                    name=fields["name"],
                )
            except StripeError as err:
                return redirect(url_for("pages.invoice_page", in_id=in_id, error=err.message), 303)
            e.store.internal("retries").pop(in_id, None)
            if not e.billing.retry_invoice(ctx, inv):
                e.store.save()
                return redirect(url_for("pages.invoice_page", in_id=in_id, error="Your card was declined."), 303)
            e.store.save()
    return redirect(url_for("pages.invoice_page", in_id=in_id), 303)


@bp.get("/i/<in_id>/pdf")
def invoice_pdf(in_id: str):
    """A small PDF of the invoice."""
    e = emu()
    with e.store.lock:
        inv = e.store.get("invoices", in_id)
        if inv is None:
            return not_found_page()
        inv = copy.deepcopy(inv)
    cur = inv["currency"]
    lines = [
        (20, f"Invoice {inv['number'] or inv['id']}"),
        (10, objects.ACCOUNT_NAME),
        (0, ""),
        (11, f"Date of issue: {date_filter(inv['created'])}"),
        (11, f"Billed to: {inv['customer_name'] or ''} {inv['customer_email'] or ''}"),
        (11, f"Status: {inv['status']}"),
        (0, ""),
    ]
    for line in inv["lines"]["data"]:
        lines.append((10, f"{line['description']}    {objects.money(line['amount'], cur)}"))
        lines.append((8, f"    {date_filter(line['period']['start'])} - {date_filter(line['period']['end'])}"))
    lines += [
        (0, ""),
        (11, f"Subtotal: {objects.money(inv['subtotal'], cur)}"),
        (11, f"Total: {objects.money(inv['total'], cur)}"),
        (12, f"Amount due: {objects.money(inv['amount_due'], cur)}"),
        (11, f"Amount paid: {objects.money(inv['amount_paid'], cur)}"),
    ]
    name = quote(f"Invoice-{inv['number'] or inv['id']}.pdf")
    return Response(
        render_pdf(lines), mimetype="application/pdf", headers={"Content-Disposition": f"inline; filename={name}"}
    )
