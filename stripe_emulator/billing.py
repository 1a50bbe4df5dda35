"""The billing engine: what happens when someone pays, changes a plan or time passes.

Route handlers validate input and call these methods with the store lock held.
Each method mutates Stripe-shaped objects in the store and emits the events
Stripe would emit, in Stripe's usual order, with snapshots of the objects at
that moment (so ``data.object`` of an old event does not change later).
"""

from __future__ import annotations

import calendar
import copy
import datetime as dt
from dataclasses import dataclass, field

from . import cards, objects
from .errors import StripeError, card_declined
from .store import Store, new_id
from .webhooks import Dispatcher

DAY = 86400
#: The key the emulator accepts unless told otherwise: the one the app's gateway uses when STRIPE_SECRET_KEY is unset.
DEFAULT_API_KEY = "sk_test_emulator"


@dataclass
class Config:
    """Behaviour knobs (command line flags / EmulatorServer keyword arguments)."""

    public_url: str | None = None  # base of hosted page URLs; default: the request's host
    failed_renewal_outcome: str = "canceled"  # or "unpaid", after the last failed attempt
    payment_attempts: int = 3  # charge attempts per invoice before giving up
    retry_interval_days: int = 3  # days between attempts
    webhooks: list = field(default_factory=list)  # [(url, secret)] from the command line
    # The secret keys answered, as Stripe answers only its account's: another key gets Stripe's 401, so a mistyped
    # key fails here as it would on Stripe. None (`--any-test-key`): any well-formed `sk_test_…` key.
    api_keys: tuple[str, ...] | None = (DEFAULT_API_KEY,)


@dataclass
class Ctx:
    """Who is asking: used for hosted URLs and for ``event.request``."""

    base_url: str
    request_id: str | None = None
    idempotency_key: str | None = None


def add_interval(anchor: int, interval: str, count: int, n: int) -> int:
    """``anchor`` moved by ``n`` billing intervals, keeping the anchor's day of month."""
    if interval == "day":
        return anchor + n * count * DAY
    if interval == "week":
        return anchor + n * count * 7 * DAY
    months = n * count * (12 if interval == "year" else 1)
    start = dt.datetime.fromtimestamp(anchor, dt.UTC)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def fmt_date(ts: int) -> str:
    """A proration line's date as Stripe writes it: ``1 Dec 2026`` (UTC)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%-d %b %Y")


def quantity_of(qty: int, name: str) -> str:
    """``Pro`` for one unit, ``2 × Pro`` for more, as Stripe's proration lines name a price."""
    return name if qty == 1 else f"{qty} × {name}"


class Billing:
    def __init__(self, store: Store, dispatcher: Dispatcher, config: Config):
        self.store = store
        self.dispatcher = dispatcher
        self.config = config
        #: The public URL hosted pages were last asked for on (``--public-url``, else the client's address): a
        #: webhook's hosted-page addresses are made on it (an event emitted without a request context included).
        self.public_base = (config.public_url or "").rstrip("/")

    # ================================================================ events
    dry_run = False  # set by preview(): compute invoices, emit and charge nothing

    def emit(self, ctx: Ctx | None, etype: str, obj: dict, previous: dict | None = None) -> dict:
        s = self.store
        if self.dry_run:
            return {}
        if ctx:
            self.public_base = ctx.base_url
        snapshot = objects.count_sublists(copy.deepcopy(obj), root=False)
        evt = objects.event(
            new_id("evt"),
            s.now(),
            etype,
            snapshot,
            objects.count_sublists(copy.deepcopy(previous), root=False),
            ctx.request_id if ctx else None,
            ctx.idempotency_key if ctx else None,
        )
        targets = self.webhook_targets(etype)
        evt["pending_webhooks"] = len(targets)
        s.put("events", evt)
        if targets:
            # The stored event keeps its hosted pages' paths (see objects.public_urls); a delivery carries addresses.
            self.dispatcher.enqueue(objects.public_urls(copy.deepcopy(evt), self.public_base), targets)
        return evt

    def webhook_targets(self, etype: str) -> list:
        """(endpoint id, url, secret, API version) of every enabled endpoint that wants ``etype``, then
        every ``--webhook`` (which speaks the account's version)."""
        targets = []
        secrets = self.store.internal("secrets")
        for we in self.store.coll("webhook_endpoints").values():
            if we["status"] != "enabled":
                continue
            enabled = we["enabled_events"]
            if "*" in enabled or etype in enabled:
                targets.append((we["id"], we["url"], secrets[we["id"]], we["api_version"] or objects.API_VERSION))
        for url, secret in self.config.webhooks:
            targets.append((None, url, secret, objects.API_VERSION))
        return targets

    def emit_update(self, ctx: Ctx | None, etype: str, before: dict, after: dict) -> dict | None:
        prev = objects.diff(before, after)
        if not prev:
            return None
        return self.emit(ctx, etype, after, prev)

    # ================================================================ customers
    def create_customer(
        self, ctx: Ctx | None, *, email=None, name=None, description=None, phone=None, metadata=None
    ) -> dict:
        s = self.store
        cid = new_id("cus", 14)
        prefix = cid[4:12].upper()
        cust = objects.customer(
            cid,
            s.now(),
            email=email,
            name=name,
            description=description,
            phone=phone,
            metadata=metadata,
            invoice_prefix=prefix,
        )
        s.put("customers", cust)
        self.emit(ctx, "customer.created", cust)
        return cust

    def add_card(
        self,
        ctx: Ctx | None,
        cust: dict,
        number: str,
        *,
        exp_month: int = 12,
        exp_year: int | None = None,
        name: str | None = None,
        make_default: bool = True,
        param: str = "card",
    ) -> dict:
        """Validate a test card, create its PaymentMethod, attach it and make it the default."""
        digits, card = cards.lookup(number, param)
        if card.behaviour == "decline":
            raise card_declined(
                card.message or "Your card was declined.",
                decline_code=card.decline_code or "generic_decline",
                param=param,
            )
        s = self.store
        if exp_year is None:
            exp_year = dt.datetime.fromtimestamp(s.now(), dt.UTC).year + 5
        pm = objects.payment_method(
            new_id("pm"),
            s.now(),
            brand=card.brand,
            last4=digits[-4:],
            exp_month=int(exp_month),
            exp_year=int(exp_year),
            fingerprint=cards.fingerprint(digits),
            name=name,
            email=cust.get("email"),
            customer_id=cust["id"],
            funding=card.funding,
        )
        s.put("payment_methods", pm)
        s.internal("cards")[pm["id"]] = {"behaviour": card.behaviour, "charges": 0}
        self.emit(ctx, "payment_method.attached", pm)
        if make_default:
            self.set_default_payment_method(ctx, cust, pm["id"])
        return pm

    def set_default_payment_method(self, ctx: Ctx | None, cust: dict, pm_id: str | None) -> None:
        before = copy.deepcopy(cust)
        cust["invoice_settings"]["default_payment_method"] = pm_id
        self.emit_update(ctx, "customer.updated", before, cust)

    def charge(self, pm_id: str | None, amount: int) -> StripeError | None:
        """Try to take ``amount`` from a card; None on success, the card error otherwise."""
        if amount <= 0:
            return None
        if not pm_id or pm_id not in self.store.internal("cards"):
            return StripeError(
                "The customer has no attached payment source or default payment method.",
                status=402,
                type="card_error",
                code="missing",
            )
        info = self.store.internal("cards")[pm_id]
        info["charges"] += 1
        if info["behaviour"] == "fail_later" and info["charges"] > 1:
            return card_declined()
        if info["behaviour"] == "decline":
            return card_declined()
        return None

    def would_decline(self, pm_id: str | None, amount: int) -> bool:
        """Whether charging ``amount`` now would fail (used for ``payment_behavior=error_if_incomplete``)."""
        if amount <= 0:
            return False
        info = self.store.internal("cards").get(pm_id or "")
        if info is None:
            return True
        return info["behaviour"] == "decline" or (info["behaviour"] == "fail_later" and info["charges"] >= 1)

    # ================================================================ invoices
    def _price_line_description(self, p: dict, quantity: int) -> str:
        prod = self.store.get("products", p["product"]) or {"name": p["product"]}
        rec = p.get("recurring") or {}
        amount = objects.money(p["unit_amount"], p["currency"])
        return f"{quantity} × {prod['name']} (at {amount} / {rec.get('interval', 'once')})"

    def build_invoice(
        self,
        ctx: Ctx,
        cust: dict,
        sub: dict | None,
        billing_reason: str,
        line_specs: list,
        period_start: int,
        period_end: int,
        announce: bool = True,
    ) -> dict:
        """Create a draft invoice from line specs and emit ``invoice.created``.

        A line spec is a dict with amount, description, price, quantity, period
        (start, end), subscription item id and the proration flag.
        """
        s = self.store
        in_id = new_id("in")
        lines = [
            objects.invoice_line(
                new_id("il"),
                in_id,
                amount=spec["amount"],
                currency=spec["price"]["currency"],
                description=spec["description"],
                price_obj=spec["price"],
                quantity=spec["quantity"],
                period_start=spec["period"][0],
                period_end=spec["period"][1],
                sub_id=sub["id"] if sub else None,
                si_id=spec.get("si"),
                proration=spec.get("proration", False),
            )
            for spec in line_specs
        ]
        inv = objects.invoice(
            in_id,
            cust,
            s.now(),
            number=None,
            billing_reason=billing_reason,
            currency=(sub or {}).get("currency", "usd"),
            lines=lines,
            sub=sub,
            period_start=period_start,
            period_end=period_end,
            hosted_invoice_url=f"/i/{in_id}",  # paths: served on the current public URL (objects.public_urls)
            invoice_pdf=f"/i/{in_id}/pdf",
            starting_balance=cust["balance"],
        )
        s.put("invoices", inv)
        if announce:
            self.emit(ctx, "invoice.created", inv)
        return inv

    def finalize_invoice(self, ctx: Ctx, inv: dict) -> None:
        s = self.store
        cust = s.must("customers", inv["customer"])
        inv["status"] = "open"
        inv["number"] = f"{cust['invoice_prefix']}-{cust['next_invoice_sequence']:04d}"
        inv["status_transitions"]["finalized_at"] = s.now()
        cust["next_invoice_sequence"] += 1
        # The customer's credit balance (negative = credit) was applied to this invoice.
        cust["balance"] = inv["ending_balance"]
        if cust["currency"] is None:
            cust["currency"] = inv["currency"]
        self.emit(ctx, "invoice.finalized", inv)

    def attempt_payment(self, ctx: Ctx, inv: dict, pm_id: str | None) -> bool:
        """Charge an open invoice; emits paid/payment_succeeded or payment_failed.

        Returns True when the invoice ended up paid.
        """
        s = self.store
        if inv["status"] != "open":
            return inv["status"] == "paid"
        amount = inv["amount_remaining"]
        now = s.now()
        if amount > 0:
            inv["attempt_count"] += 1
            inv["attempted"] = True
        err = self.charge(pm_id, amount)
        pi_id = new_id("pi")
        if err is None:
            inv["status"] = "paid"
            inv["amount_paid"] = amount
            inv["amount_remaining"] = 0
            inv["attempted"] = True
            inv["next_payment_attempt"] = None
            inv["auto_advance"] = False
            inv["status_transitions"]["paid_at"] = now
            if amount > 0:
                pay = objects.invoice_payment(new_id("inpay"), inv["id"], amount, inv["currency"], now, pi_id, True)
                inv["payments"]["data"].insert(0, pay)
            s.internal("retries").pop(inv["id"], None)
            self.emit(ctx, "invoice.paid", inv)
            self.emit(ctx, "invoice.payment_succeeded", inv)
            return True
        inv["last_finalization_error"] = None
        attempts = inv["attempt_count"]
        if attempts < self.config.payment_attempts:
            inv["next_payment_attempt"] = now + self.config.retry_interval_days * DAY
            s.internal("retries")[inv["id"]] = inv["next_payment_attempt"]
        else:
            inv["next_payment_attempt"] = None
            s.internal("retries").pop(inv["id"], None)
        self.emit(ctx, "invoice.payment_failed", inv)
        return False

    def invoice_pm(self, inv: dict) -> str | None:
        """The card an invoice is charged to: subscription default, else the customer's."""
        sub_id = ((inv.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        sub = self.store.get("subscriptions", sub_id) if sub_id else None
        if sub and sub.get("default_payment_method"):
            return sub["default_payment_method"]
        cust = self.store.must("customers", inv["customer"])
        return cust["invoice_settings"]["default_payment_method"] if cust else None

    def settle_subscription_invoice(self, ctx: Ctx, sub: dict, inv: dict) -> None:
        """Finalise and charge an invoice of ``sub``; move the subscription's status accordingly."""
        if self.dry_run:
            return
        self.finalize_invoice(ctx, inv)
        before = copy.deepcopy(sub)
        sub["latest_invoice"] = inv["id"]
        paid = self.attempt_payment(ctx, inv, self.invoice_pm(inv))
        self._after_attempt(ctx, sub, inv, paid, before)

    def _after_attempt(self, ctx: Ctx, sub: dict, inv: dict, paid: bool, before: dict) -> None:
        if paid:
            if sub["status"] in ("past_due", "unpaid", "incomplete"):
                sub["status"] = "active"
        elif inv["next_payment_attempt"] is not None:
            if sub["status"] == "active":
                sub["status"] = "past_due"
        else:
            if self.config.failed_renewal_outcome == "unpaid":
                sub["status"] = "unpaid"
            else:
                self._end_subscription(sub, reason="payment_failed")
                self.emit(ctx, "customer.subscription.deleted", sub)
                return
        self.emit_update(ctx, "customer.subscription.updated", before, sub)

    def retry_invoice(self, ctx: Ctx, inv: dict) -> bool:
        sub_id = ((inv.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        sub = self.store.get("subscriptions", sub_id) if sub_id else None
        before = copy.deepcopy(sub) if sub else None
        paid = self.attempt_payment(ctx, inv, self.invoice_pm(inv))
        if sub and before and sub["status"] != "canceled":
            self._after_attempt(ctx, sub, inv, paid, before)
        return paid

    # ================================================================ checkout
    def complete_checkout(
        self,
        ctx: Ctx,
        cs: dict,
        card_number: str,
        *,
        email: str | None = None,
        name: str | None = None,
        exp_month: int = 12,
        exp_year: int | None = None,
    ) -> dict:
        """Pay a Checkout Session: what the hosted page's Pay button does.

        A declined card raises a 402 card error and leaves the session open.
        """
        s = self.store
        if cs["status"] != "open":
            raise StripeError(
                f"This Checkout Session is {cs['status']} and can no longer be paid.",
                code="checkout_session_not_open",
                param="session",
            )
        # Validate the card before creating anything, so a decline leaves no trace.
        digits, card = cards.lookup(card_number)
        if card.behaviour == "decline":
            raise card_declined(
                card.message or "Your card was declined.",
                decline_code=card.decline_code or "generic_decline",
                param="card",
            )
        cust = s.get("customers", cs["customer"]) if cs["customer"] else None
        if cust is None:
            cust = self.create_customer(ctx, email=email or cs["customer_email"], name=name)
        pm = self.add_card(ctx, cust, digits, exp_month=exp_month, exp_year=exp_year, name=name)

        now = s.now()
        sub_id = new_id("sub")
        line_items = s.internal("line_items").get(cs["id"], [])
        items = []
        for li in line_items:
            p = s.must("prices", li["price"]["id"])
            rec = p["recurring"]
            end = add_interval(now, rec["interval"], rec["interval_count"], 1)
            items.append(objects.subscription_item(new_id("si", 14), sub_id, p, now, now, end, li["quantity"]))
        sub_data = s.internal("sub_data").get(cs["id"], {})
        sub = objects.subscription(
            sub_id,
            cust["id"],
            now,
            items,
            metadata=sub_data.get("metadata"),
            default_payment_method=pm["id"],
            currency=cs["currency"],
            description=sub_data.get("description"),
        )
        s.put("subscriptions", sub)
        specs = [
            {
                "amount": it["price"]["unit_amount"] * it["quantity"],
                "description": self._price_line_description(it["price"], it["quantity"]),
                "price": it["price"],
                "quantity": it["quantity"],
                "si": it["id"],
                "period": (it["current_period_start"], it["current_period_end"]),
            }
            for it in items
        ]
        inv = self.build_invoice(ctx, cust, sub, "subscription_create", specs, now, now, announce=False)
        sub["latest_invoice"] = inv["id"]
        self.emit(ctx, "customer.subscription.created", sub)
        self.emit(ctx, "invoice.created", inv)
        self.finalize_invoice(ctx, inv)
        paid = self.attempt_payment(ctx, inv, pm["id"])
        if not paid:  # only possible for cards failing immediately; kept for completeness
            sub["status"] = "incomplete"

        cs.update(self._completed_session_fields(cs, cust, sub_id, inv, name))
        self.emit(ctx, "checkout.session.completed", cs)
        return cs

    @staticmethod
    def _completed_session_fields(cs: dict, cust: dict, sub_id: str, inv: dict, name: str | None) -> dict:
        """What a paid Checkout Session says of itself: complete, its subscription and invoice, the payer."""
        return {
            "status": "complete",
            "payment_status": "paid" if cs["amount_total"] > 0 else "no_payment_required",
            "customer": cust["id"],
            "subscription": sub_id,
            "invoice": inv["id"],
            "url": None,
            "customer_details": {
                "address": {
                    "city": None,
                    "country": "US",
                    "line1": None,
                    "line2": None,
                    "postal_code": None,
                    "state": None,
                },
                "business_name": None,
                "email": cust.get("email"),
                "individual_name": None,
                "name": name or cust.get("name"),
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
            "collected_information": {"business_name": None, "individual_name": None, "shipping_details": None},
        }

    def expire_checkout(self, ctx: Ctx | None, cs: dict) -> dict:
        cs["status"] = "expired"
        cs["url"] = None
        self.emit(ctx, "checkout.session.expired", cs)
        return cs

    # ================================================================ subscriptions
    def period(self, sub: dict) -> tuple[int, int]:
        items = sub["items"]["data"]
        return (min(i["current_period_start"] for i in items), min(i["current_period_end"] for i in items))

    def set_cancel_at_period_end(self, ctx: Ctx, sub: dict, flag: bool, *, comment=None, feedback=None) -> None:
        before = copy.deepcopy(sub)
        now = self.store.now()
        if flag:
            sub["cancel_at_period_end"] = True
            sub["cancel_at"] = self.period(sub)[1]
            sub["canceled_at"] = now
            sub["cancellation_details"]["reason"] = "cancellation_requested"
        else:
            sub["cancel_at_period_end"] = False
            sub["cancel_at"] = None
            sub["canceled_at"] = None
            sub["cancellation_details"] = {"comment": None, "feedback": None, "feedback_option": None, "reason": None}
        if comment is not None:
            sub["cancellation_details"]["comment"] = comment
        if feedback is not None:
            sub["cancellation_details"]["feedback"] = feedback
        self.emit_update(ctx, "customer.subscription.updated", before, sub)

    def _end_subscription(self, sub: dict, reason: str) -> None:
        now = self.store.now()
        sub["status"] = "canceled"
        sub["ended_at"] = now
        if sub["canceled_at"] is None:
            sub["canceled_at"] = now
        if sub["cancellation_details"]["reason"] is None:
            sub["cancellation_details"]["reason"] = reason
        self.store.internal("pending_items").pop(sub["id"], None)
        sched = self.store.get("subscription_schedules", sub.get("schedule")) if sub.get("schedule") else None
        if sched is not None and sched["status"] in ("active", "not_started"):
            # Stripe: the schedule of a subscription that ends is canceled with it.
            sched.update({"status": "canceled", "canceled_at": now, "current_phase": None})
            self.emit(None, "subscription_schedule.canceled", sched)
        for inv_id in list(self.store.internal("retries")):
            inv = self.store.get("invoices", inv_id)
            if inv and (inv.get("parent") or {}).get("subscription_details", {}).get("subscription") == sub["id"]:
                inv["next_payment_attempt"] = None
                self.store.internal("retries").pop(inv_id, None)

    def cancel_now(self, ctx: Ctx, sub: dict, *, comment=None, feedback=None) -> dict:
        if comment is not None:
            sub["cancellation_details"]["comment"] = comment
        if feedback is not None:
            sub["cancellation_details"]["feedback"] = feedback
        sub["cancellation_details"]["reason"] = sub["cancellation_details"]["reason"] or "cancellation_requested"
        self._end_subscription(sub, "cancellation_requested")
        self.emit(ctx, "customer.subscription.deleted", sub)
        return sub

    def change_items(
        self,
        ctx: Ctx,
        sub: dict,
        changes: list,
        proration_behavior: str,
        billing_cycle_anchor: str | None = None,
        proration_date: int | None = None,
    ) -> None:
        """Swap prices / quantities and prorate the way Stripe does.

        ``changes`` is a list of (item or None, new price dict, quantity, deleted).
        Same interval: prorations go onto the next invoice (``create_prorations``)
        or are invoiced now (``always_invoice``). Interval change (or
        ``billing_cycle_anchor=now``): the period restarts today and an invoice
        for the new period, less the unused time, is charged at once.
        ``proration_date``: prorations worked out as though the change were made then (Stripe's
        ``proration_date``, the time a preview used), the change itself made now.
        """
        s = self.store
        now = s.now()
        before = copy.deepcopy(sub)
        start, end = self.period(sub)
        length = max(end - start, 1)
        remaining = max(end - (now if proration_date is None else proration_date), 0)
        frac = remaining / length
        old_intervals = {
            (i["price"]["recurring"]["interval"], i["price"]["recurring"]["interval_count"])
            for i in sub["items"]["data"]
        }
        prorated_at = now if proration_date is None else proration_date
        specs = self._swap_items(sub, before, changes, proration_behavior, prorated_at, (start, end), frac)
        data = sub["items"]["data"]
        if not data:
            raise StripeError("A subscription must have at least one active item.", param="items")
        new_intervals = {(i["price"]["recurring"]["interval"], i["price"]["recurring"]["interval_count"]) for i in data}
        reset = new_intervals != old_intervals or billing_cycle_anchor == "now"
        cust = s.must("customers", sub["customer"])
        if reset:
            specs = self._restart_period(sub, specs, now)
        invoice_now = reset or (proration_behavior == "always_invoice" and bool(specs))
        inv = None
        if invoice_now:
            if not reset:
                specs = specs + s.internal("pending_items").pop(sub["id"], [])
            inv = self.build_invoice(ctx, cust, sub, "subscription_update", specs, now, now, announce=False)
            sub["latest_invoice"] = inv["id"]
        elif specs:
            s.internal("pending_items").setdefault(sub["id"], []).extend(specs)
        self.emit_update(ctx, "customer.subscription.updated", before, sub)
        if inv is not None:
            self.emit(ctx, "invoice.created", inv)
            self.settle_subscription_invoice(ctx, sub, inv)

    def _swap_items(
        self,
        sub: dict,
        before: dict,
        changes: list,
        proration_behavior: str,
        now: int,
        period: tuple[int, int],
        frac: float,
    ) -> list:
        """Apply ``changes`` to the subscription's items; answers the proration line specs.

        A changed or deleted item is credited for its unused time, a new or changed one charged for
        the remaining time (``frac`` of the period), unless ``proration_behavior`` is ``none``.
        """
        start, end = period
        specs = []
        data = sub["items"]["data"]
        for item, new_price, qty, deleted in changes:
            if item is not None:
                old_price, old_qty = item["price"], item["quantity"]
                if proration_behavior != "none" and (deleted or old_price["id"] != new_price["id"] or qty != old_qty):
                    specs.append(
                        {
                            "amount": -round(old_price["unit_amount"] * old_qty * frac),
                            "description": (
                                f"Unused time on {quantity_of(old_qty, self._product_name(old_price))}"
                                f" after {fmt_date(now)}"
                            ),
                            "price": old_price,
                            "quantity": old_qty,
                            "si": item["id"],
                            "proration": True,
                            "period": (now, end),
                        }
                    )
                if deleted:
                    data.remove(item)
                    continue
                item["price"] = dict(new_price)
                item["plan"] = objects.plan_from_price(new_price)
                item["quantity"] = qty
            else:
                item = objects.subscription_item(new_id("si", 14), sub["id"], new_price, now, start, end, qty)
                data.append(item)
            if proration_behavior != "none" and (not before_has(before, item, new_price, qty)):
                specs.append(
                    {
                        "amount": round(new_price["unit_amount"] * qty * frac),
                        "description": (
                            f"Remaining time on {quantity_of(qty, self._product_name(new_price))} after {fmt_date(now)}"
                        ),
                        "price": new_price,
                        "quantity": qty,
                        "si": item["id"],
                        "proration": True,
                        "period": (now, end),
                    }
                )
        return specs

    def _restart_period(self, sub: dict, specs: list, now: int) -> list:
        """Restart every item's period now: keep the credits, replace the "Remaining time" debits by a full
        charge of the new period, and take the pending prorations along. Answers the new line specs."""
        s = self.store
        data = sub["items"]["data"]
        specs = [sp for sp in specs if sp["amount"] <= 0]
        for it in data:
            rec = it["price"]["recurring"]
            it["current_period_start"] = now
            it["current_period_end"] = add_interval(now, rec["interval"], rec["interval_count"], 1)
            it["billed_until"] = it["current_period_end"]
            specs.append(
                {
                    "amount": it["price"]["unit_amount"] * it["quantity"],
                    "description": self._price_line_description(it["price"], it["quantity"]),
                    "price": it["price"],
                    "quantity": it["quantity"],
                    "si": it["id"],
                    "period": (it["current_period_start"], it["current_period_end"]),
                }
            )
        sub["billing_cycle_anchor"] = now
        specs = specs + s.internal("pending_items").pop(sub["id"], [])
        if sub["cancel_at_period_end"]:
            sub["cancel_at"] = self.period(sub)[1]
        return specs

    def _product_name(self, p: dict) -> str:
        prod = self.store.get("products", p["product"])
        return prod["name"] if prod else p["product"]

    def renew(self, ctx: Ctx, sub: dict) -> None:
        """The period ended: start the next one and invoice it (or end the subscription)."""
        s = self.store
        start, end = self.period(sub)
        if sub["cancel_at_period_end"] or (sub["cancel_at"] and sub["cancel_at"] <= end):
            self._end_subscription(sub, "cancellation_requested")
            self.emit(ctx, "customer.subscription.deleted", sub)
            return
        before = copy.deepcopy(sub)
        self._apply_schedule(ctx, sub, end)
        for it in sub["items"]["data"]:
            rec = it["price"]["recurring"]
            n = 1
            while add_interval(sub["billing_cycle_anchor"], rec["interval"], rec["interval_count"], n) <= end:
                n += 1
            it["current_period_start"] = end
            it["current_period_end"] = add_interval(
                sub["billing_cycle_anchor"], rec["interval"], rec["interval_count"], n
            )
            it["billed_until"] = it["current_period_end"]
        specs = s.internal("pending_items").pop(sub["id"], [])
        specs = specs + [
            {
                "amount": it["price"]["unit_amount"] * it["quantity"],
                "description": self._price_line_description(it["price"], it["quantity"]),
                "price": it["price"],
                "quantity": it["quantity"],
                "si": it["id"],
                "period": (it["current_period_start"], it["current_period_end"]),
            }
            for it in sub["items"]["data"]
        ]
        cust = s.must("customers", sub["customer"])
        inv = self.build_invoice(ctx, cust, sub, "subscription_cycle", specs, start, end, announce=False)
        sub["latest_invoice"] = inv["id"]
        self.emit_update(ctx, "customer.subscription.updated", before, sub)
        self.emit(ctx, "invoice.created", inv)
        if sub["status"] == "unpaid":
            self.finalize_invoice(ctx, inv)  # left open: unpaid subscriptions are not charged
            return
        self.settle_subscription_invoice(ctx, sub, inv)

    def _apply_schedule(self, ctx: Ctx, sub: dict, boundary: int) -> None:
        """A renewal at ``boundary``: if the schedule's current phase ends there, enter the next phase first, so
        that the renewal invoices the new prices (or release the schedule after its last phase)."""
        sched = self.active_schedule(sub)
        if sched is not None and sched["current_phase"]["end_date"] <= boundary:
            self.end_schedule_phase(ctx, sched, sub, at_renewal=True)

    def active_schedule(self, sub: dict) -> dict | None:
        sched = self.store.get("subscription_schedules", sub.get("schedule")) if sub.get("schedule") else None
        if sched is None or sched["status"] != "active" or not sched.get("current_phase"):
            return None
        return sched

    def end_schedule_phase(self, ctx: Ctx, sched: dict, sub: dict, *, at_renewal: bool = False) -> None:
        """The schedule's current phase ended: the subscription takes the next phase's prices, or, after the last
        phase, the schedule is released (``end_behavior=release``) and the subscription goes on as it is.

        Stripe moves a schedule by its phases' dates, not by the subscription's renewals: a phase that ends
        between renewals (the price was changed under the schedule) applies then, prorated per the phase's
        ``proration_behavior`` (an interval change restarts the period and invoices at once). At a renewal the
        prices are swapped without proration, and the renewal invoices them.
        """
        s = self.store
        before_sched = copy.deepcopy(sched)
        ended = sched["current_phase"]["end_date"]
        nxt = next(
            (ph for ph in sorted(sched["phases"], key=lambda ph: ph["start_date"]) if ph["start_date"] >= ended), None
        )
        if nxt is None:
            before = copy.deepcopy(sub)
            sched.update(
                {
                    "status": "released",
                    "released_at": s.now(),
                    "released_subscription": sub["id"],
                    "current_phase": None,
                }
            )
            sub["schedule"] = None
            self.emit(ctx, "subscription_schedule.released", sched)
            if not at_renewal:  # a renewal announces the subscription's changes itself
                self.emit_update(ctx, "customer.subscription.updated", before, sub)
            return
        changes = [
            (item, s.must("prices", spec["price"]), spec["quantity"], False)
            for item, spec in zip(sub["items"]["data"], nxt["items"], strict=False)
        ]
        if at_renewal:
            for item, price, qty, _ in changes:
                item["price"] = dict(price)
                item["plan"] = objects.plan_from_price(price)
                item["quantity"] = qty
        else:
            self.change_items(ctx, sub, changes, nxt["proration_behavior"])
        sched["current_phase"] = {"end_date": nxt["end_date"], "start_date": nxt["start_date"]}
        self.emit_update(ctx, "subscription_schedule.updated", before_sched, sched)

    def check_proration_date(self, sub: dict, proration_date: int | None, param: str) -> None:
        """Stripe: a ``proration_date`` must fall within the subscription's current period."""
        if proration_date is None:
            return
        start, end = self.period(sub)
        if not start <= proration_date <= end:
            raise StripeError(
                f"The proration_date ({proration_date}) must be within the current subscription period "
                f"({start} to {end}).",
                param=param,
            )

    def preview(
        self, ctx: Ctx, sub: dict, changes: list, proration_behavior: str, proration_date: int | None = None
    ) -> dict:
        """The invoice a change would produce now (prorated as of ``proration_date`` if given), or else the next
        renewal invoice; state is untouched. A preview that prorates names the time it used
        (``parent.subscription_details.subscription_proration_date``)."""
        s = self.store
        saved = copy.deepcopy(s.state)
        self.dry_run = True
        try:
            sub = s.must("subscriptions", sub["id"])
            latest = sub["latest_invoice"]
            if changes:
                self.change_items(
                    ctx,
                    sub,
                    [
                        (
                            next((i for i in sub["items"]["data"] if item and i["id"] == item["id"]), None),
                            price,
                            qty,
                            deleted,
                        )
                        for item, price, qty, deleted in changes
                    ],
                    proration_behavior,
                    proration_date=proration_date,
                )
            if sub["latest_invoice"] == latest:
                self.renew(ctx, sub)
            inv = copy.deepcopy(s.must("invoices", sub["latest_invoice"]))
        finally:
            self.dry_run = False
            s.state = saved
        inv["id"] = "upcoming_" + new_id("in")
        inv["hosted_invoice_url"] = inv["invoice_pdf"] = None
        details = (inv.get("parent") or {}).get("subscription_details")
        if details is not None and changes and proration_behavior != "none":
            details["subscription_proration_date"] = s.now() if proration_date is None else proration_date
        return inv

    # ================================================================ the clock
    def _next_due(self) -> tuple[int, str, str] | None:
        s = self.store
        due = []
        for sub in s.coll("subscriptions").values():
            if sub["status"] in ("canceled", "incomplete_expired", "incomplete"):
                continue
            _, end = self.period(sub)
            when = end
            if sub["cancel_at"] and sub["cancel_at"] < end:
                when = sub["cancel_at"]
            due.append((when, "renew", sub["id"]))
        for sched in s.coll("subscription_schedules").values():
            managed = s.get("subscriptions", sched.get("subscription")) if sched.get("subscription") else None
            if managed is None or managed["status"] in ("canceled", "incomplete_expired"):
                continue
            active = self.active_schedule(managed)
            if active is None or active is not sched:  # only the schedule that drives the subscription
                continue
            when = sched["current_phase"]["end_date"]
            if when != self.period(managed)[1]:  # at the period end the renewal enters the next phase itself
                due.append((when, "phase", sched["id"]))
        for inv_id, when in s.internal("retries").items():
            due.append((when, "retry", inv_id))
        for cs in s.coll("checkout_sessions").values():
            if cs["status"] == "open":
                due.append((cs["expires_at"], "expire", cs["id"]))
        return min(due) if due else None

    def advance_to(self, ctx: Ctx, target: int) -> int:
        """Move the clock to ``target``, running every renewal, retry and expiry due on the way."""
        s = self.store
        for _ in range(10000):
            nxt = self._next_due()
            if nxt is None or nxt[0] > target:
                break
            when, kind, obj_id = nxt
            s.set_now(when)
            if kind == "renew":
                sub = s.must("subscriptions", obj_id)
                if (
                    sub["cancel_at"]
                    and not sub["cancel_at_period_end"]
                    and sub["cancel_at"] <= when
                    and sub["cancel_at"] < self.period(sub)[1]
                ):
                    self._end_subscription(sub, "cancellation_requested")
                    self.emit(ctx, "customer.subscription.deleted", sub)
                else:
                    self.renew(ctx, sub)
            elif kind == "phase":
                sched = s.must("subscription_schedules", obj_id)
                self.end_schedule_phase(ctx, sched, s.must("subscriptions", sched["subscription"]))
            elif kind == "retry":
                s.internal("retries").pop(obj_id, None)
                self.retry_invoice(ctx, s.must("invoices", obj_id))
            else:
                self.expire_checkout(ctx, s.must("checkout_sessions", obj_id))
        s.set_now(target)
        return s.now()


def before_has(before_sub: dict, item: dict, price: dict, qty: int) -> bool:
    """True when ``before_sub`` already had ``item`` with this very price and quantity."""
    for it in before_sub["items"]["data"]:
        if it["id"] == item["id"]:
            return it["price"]["id"] == price["id"] and it["quantity"] == qty
    return False
