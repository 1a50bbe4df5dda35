"""Plan changes: what people ask of their paid subscription — another plan or cycle, cancel, resume.

Each change is made on Stripe first (the source of truth), then read back with `sync_customer`, whose commit sends
`subscription_changed`. The pure rules — `cancellation_pending`, `withdraw_cancellation_params`,
`scheduled_change_of`, `monthly_equivalent` — take plain values and are importable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer
from sqlalchemy import select

from app.extensions import db
from app.logging import get_logger
from app.models import ACCESS_STATUSES, SubscriptionPlan, User, UserSubscription, utcnow
from app.services import DomainError, audit, mail, stripe_gateway
from app.services.catalog import plan_for_price, validate_choice
from app.services.queries import live_subscription
from app.services.stripe_gateway import from_timestamp, id_of
from app.services.sync import (
    plan_change_direction,
    plan_change_scheduled_row,
    scheduled_price_changes,
    sync_customer,
)

log = get_logger(__name__)


class SubscriptionError(DomainError):
    code = "subscription_error"


def paid_subscription(user_id: int) -> UserSubscription | None:
    """The user's live subscription unless it is to the $0 price (made in the Dashboard, or by a Portal that
    offered Free): such a subscription is the Free plan — nothing renews, nothing to cancel."""
    subscription = live_subscription(user_id)
    if subscription is None or subscription.plan.is_free:
        return None
    return subscription


def require_live_subscription(user: User) -> UserSubscription:
    subscription = live_subscription(user.id)
    if subscription is None or user.stripe_customer_id is None:
        raise SubscriptionError("You have no paid subscription.", code="no_subscription")
    return subscription


def set_cancel_at_period_end(user: User, cancel: bool) -> UserSubscription:
    """Cancel at period end (access continues until then) or resume; Stripe first, then the copy."""
    subscription = require_live_subscription(user)
    if subscription.plan.is_free:
        raise SubscriptionError("You are on the Free plan: there is no paid plan to cancel.", code="no_subscription")
    if subscription.status == "canceled":
        raise SubscriptionError("This subscription has already ended.", code="subscription_ended", status=409)
    if cancel == subscription.cancel_at_period_end:
        if cancel:
            return subscription  # asking twice is not an error: the answer is the same
        raise SubscriptionError("Your subscription is not set to cancel.", code="not_canceling", status=409)
    key = f"cancel-{subscription.stripe_subscription_id}-{int(cancel)}-{state_stamp(subscription)}"
    # A pending downgrade goes: after a cancel there is nothing to downgrade, and "Resume Pro" keeps Pro. Stripe
    # refuses to change the cancellation of a subscription a schedule manages anyway.
    release_schedule(stripe_gateway.retrieve_subscription(subscription.stripe_subscription_id))
    stripe_gateway.update_subscription(
        subscription.stripe_subscription_id, {"cancel_at_period_end": cancel}, idempotency_key=key
    )
    sync_customer(customer_id_of_user(user))
    return db.session.get_one(UserSubscription, subscription.id)


def state_stamp(subscription: UserSubscription) -> int:
    """The row's last write (`updated_at`) in microseconds, for the idempotency keys of the requests a change makes:
    a key names the state the change was asked in, so the same form sent twice is one change at Stripe, and the same
    change asked again after another one (cancel, resume, cancel — within a second at an API client's pace) is a new
    request, not the first one's answer replayed (whole seconds were: the second cancellation never reached Stripe)."""
    return (subscription.updated_at - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def customer_id_of_user(user: User) -> str:
    """The user's Stripe customer: a user with a subscription to change has one."""
    if user.stripe_customer_id is None:
        raise SubscriptionError("You have no billing account yet.", code="no_billing_account", status=409)
    return user.stripe_customer_id


def release_schedule(sub: dict[str, Any]) -> bool:
    """Detach the subscription's schedule (a pending downgrade), leaving the subscription as it is now.

    Released rather than canceled: canceling a schedule cancels its subscription. Once released, none of its
    phases can apply later.
    """
    schedule_id = id_of(sub.get("schedule"))
    if not schedule_id:
        return False
    stripe_gateway.release_subscription_schedule(schedule_id, idempotency_key=f"release-{schedule_id}")
    log.info("subscription_schedule_released", subscription=sub["id"], schedule=schedule_id)
    return True


def keep_current_plan(user: User) -> tuple[UserSubscription, ScheduledChange]:
    """Undo a scheduled downgrade or switch of cycle: the schedule is released, so the subscription renews on the plan
    it has now. The row as synced after it, and the change withdrawn (as Stripe's schedule said it)."""
    subscription = require_live_subscription(user)
    sub = stripe_gateway.retrieve_subscription(subscription.stripe_subscription_id, expand=["schedule"])
    withdrawn = scheduled_change_of(sub)
    if withdrawn is None or not release_schedule(sub):
        raise SubscriptionError(
            f"No plan change is scheduled: {subscription.plan.display_name} renews as it is.",
            code="no_scheduled_change",
            status=409,
        )
    audit.record(
        "subscription.downgrade_withdrawn",
        user.id,
        subscription=subscription.stripe_subscription_id,
        plan=subscription.plan.name,
        cycle=subscription.billing_cycle,
    )
    changed_at_stripe(user, subscription)
    sync_customer(customer_id_of_user(user))
    return db.session.get_one(UserSubscription, subscription.id), withdrawn


def changed_at_stripe(user: User, subscription: UserSubscription) -> None:
    """Note that the subscription changed at Stripe though none of the row's columns does (its schedule: a downgrade
    scheduled or withdrawn): a new state, so the same change asked for again is a new request to Stripe
    (`state_stamp`), not the first one's answer replayed. The user's lock first, as every writer of the user's rows
    takes it (a webhook holds it while it waits for the row's)."""
    db.session.execute(select(User.id).where(User.id == user.id).with_for_update())
    subscription.updated_at = utcnow()


def cancellation_pending(sub: dict[str, Any]) -> bool:
    return bool(sub.get("cancel_at_period_end")) or sub.get("cancel_at") is not None


def monthly_equivalent(plan: SubscriptionPlan, cycle: str) -> Decimal:
    price = plan.price_for(cycle) or Decimal(0)
    return price / 12 if cycle == "yearly" else price


@dataclass
class PlanChange:
    """What moving a subscription to another plan or cycle means, shown before the person confirms."""

    subscription: UserSubscription
    plan: SubscriptionPlan
    cycle: str
    price_id: str
    immediate: bool
    amount_due_now: int  # cents
    currency: str
    effective_at: datetime | None
    #: What the change is: an upgrade or a downgrade by the plans' tiers, or a cycle_change (the same plan, the other
    #: cycle) — `plan_change_direction`, the rule of the plan-change counter. Not when it takes effect (`immediate`,
    #: `effective_at`): a higher tier on a shorter cycle is an upgrade at period end, and a cycle_change waits for it.
    #: Decided before the change (the subscription's row is on the new plan once an immediate change is synced).
    kind: str
    #: A cancellation is pending: choosing another plan means staying, so the change withdraws it.
    withdraws_cancellation: bool = False
    #: The total (cents) of the invoice an immediate change makes: the amount due before the customer's credit
    #: balance is used, negative when the unused time is worth more than the new price's share.
    invoice_total: int = 0
    #: The time (unix, Stripe's clock) the preview prorated at: the change, once confirmed, prorates at it too, so
    #: the amount charged is the amount shown (`proration_token`).
    proration_date: int | None = None

    @property
    def credit_added(self) -> int:
        """Cents the change adds to the customer's credit balance: Stripe pays no negative invoice out, it credits
        the customer, and later invoices use the credit up."""
        return max(0, -self.invoice_total)


def plan_change(user: User, plan_name: str | None, cycle: str | None, preview: bool = True) -> PlanChange:
    """Describe a change of the user's paid subscription to `plan_name`/`cycle`, with the amount due now (asked of
    Stripe's invoice preview unless `preview` is false: `change_plan` reads it from the invoice the change makes).

    The rule (README, `scheduled_at_period_end`, the Portal's own): a cheaper price for the same length of time, or
    a shorter cycle, takes effect at the end of the paid period; anything else (a higher tier at the same or a
    longer cycle) takes effect now with prorations invoiced at once.
    """
    plan, cycle, price_id = validate_choice(plan_name, cycle)
    subscription = require_live_subscription(user)
    if subscription.plan_id == plan.id and subscription.billing_cycle == cycle:
        raise SubscriptionError(f"You are already on {plan.display_name} {cycle}.", code="already_on_plan", status=409)
    if subscription.status not in ACCESS_STATUSES:
        raise SubscriptionError(
            "Your subscription is not active; update your payment method first.",
            code="subscription_inactive",
            status=409,
        )
    current = subscription.plan
    immediate = not scheduled_at_period_end(
        cents(current.price_for(subscription.billing_cycle)),
        subscription.billing_cycle,
        cents(plan.price_for(cycle)),
        cycle,
    )
    amount, currency, total, proration_date = 0, "usd", 0, None
    if immediate and preview:
        amount, currency, total, proration_date = preview_amount_due(user, subscription, price_id)
    return PlanChange(
        subscription,
        plan,
        cycle,
        price_id,
        immediate,
        amount,
        currency,
        None if immediate else subscription.current_period_end,
        plan_change_direction(current.name, plan),
        withdraws_cancellation=subscription.cancel_at_period_end,
        invoice_total=total,
        proration_date=proration_date,
    )


#: When a plan change waits for the end of the paid period instead of taking effect now — the Customer Portal's
#: `schedule_at_period_end` conditions, which `flask stripe portal-config` sets (stripe_admin.portal_features): the
#: app and the Portal apply one rule to every pair of plans and cycles.
SCHEDULED_AT_PERIOD_END = ("decreasing_item_amount", "shortening_interval")

#: Months in a billing cycle's interval.
CYCLE_MONTHS = {"monthly": 1, "yearly": 12}


def scheduled_at_period_end(
    current_cents: int,
    current_cycle: str,
    new_cents: int,
    new_cycle: str,
    conditions: tuple[str, ...] = SCHEDULED_AT_PERIOD_END,
) -> bool:
    """Whether a switch from one price to another waits for the period end: any condition holds (as Stripe's Portal
    evaluates its configuration's conditions) —

    - `decreasing_item_amount`: the new price costs less for the same length of time. Prices of different cycles
      are compared per year: Starter yearly ($199.99) is cheaper than Starter monthly ($239.88 a year), so monthly
      to yearly of one plan waits, and Pro monthly to Starter yearly waits as any lower tier does;
    - `shortening_interval`: yearly to monthly (even to a higher tier: Starter yearly to Pro monthly waits, instead
      of crediting the unpaid part of a year that the monthly price cannot use up).

    Integer cents, compared exactly (cross-multiplied per year).
    """
    current_months, new_months = CYCLE_MONTHS[current_cycle], CYCLE_MONTHS[new_cycle]
    cheaper = new_cents * (12 // new_months) < current_cents * (12 // current_months)
    shorter = new_months < current_months
    return ("decreasing_item_amount" in conditions and cheaper) or ("shortening_interval" in conditions and shorter)


def cents(price: Decimal | None) -> int:
    """A catalog price (Decimal dollars) in integer cents; no price is 0."""
    return int((price or Decimal(0)) * 100)


def preview_amount_due(user: User, subscription: UserSubscription, price_id: str) -> tuple[int, str, int, int | None]:
    """What Stripe would invoice now for swapping the subscription's price (prorations included): (the amount due
    now, after any credit balance; the currency; the invoice's total, negative when the change credits the
    customer; the time Stripe prorated at, `parent.subscription_details.subscription_proration_date`)."""
    item_id = subscription_item_id(subscription)
    preview = stripe_gateway.preview_invoice(
        {
            "customer": user.stripe_customer_id,
            "subscription": subscription.stripe_subscription_id,
            "subscription_details": {
                "items": [{"id": item_id, "price": price_id}],
                "proration_behavior": "always_invoice",
            },
        }
    )
    details = (preview.get("parent") or {}).get("subscription_details") or {}
    proration_date = details.get("subscription_proration_date")
    return (
        int(preview.get("amount_due") or 0),
        preview.get("currency") or "usd",
        int(preview.get("total") or 0),
        int(proration_date) if proration_date else None,
    )


class PreviewExpired(SubscriptionError):
    """The confirmed amount cannot be charged as shown: its preview is over an hour old, or not this change's."""

    code = "preview_expired"
    status = 409


#: How long a confirmation page's amount may be charged as shown; after that the change is priced again.
PRORATION_MAX_AGE = 3600


def proration_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="plan-change-proration")


def proration_token(change: PlanChange) -> str | None:
    """What the confirmation form posts back so the change prorates at its preview's time: the subscription, the
    price and the preview's `proration_date`, signed with the time it was made (the hour is measured on this
    server's clock, the date itself is Stripe's). None when there is nothing to carry (no preview)."""
    if not change.immediate or change.proration_date is None:
        return None
    subscription = change.subscription
    return proration_serializer().dumps([subscription.stripe_subscription_id, change.price_id, change.proration_date])


def carried_proration_date(token: str, change: PlanChange) -> int:
    """The `proration_date` of a confirmation form's token: made here within the hour (not dated ahead), for this
    subscription and price; otherwise PreviewExpired (the change is priced again). Never trusted beyond that."""
    try:
        subscription_id, price_id, proration_date = proration_serializer().loads(token, max_age=PRORATION_MAX_AGE)
    except (BadData, TypeError, ValueError):
        raise PreviewExpired(
            "The amount shown was worked out over an hour ago: here it is again — please confirm it."
        ) from None
    fits = (
        subscription_id == change.subscription.stripe_subscription_id
        and price_id == change.price_id
        and isinstance(proration_date, int)
        and not isinstance(proration_date, bool)
        and proration_date > 0
    )
    if not fits:
        raise PreviewExpired("The amount shown was for another change: here is this one — please confirm it.")
    return proration_date


def subscription_item_id(subscription: UserSubscription) -> str:
    sub = stripe_gateway.retrieve_subscription(subscription.stripe_subscription_id)
    return sub["items"]["data"][0]["id"]


def change_plan(user: User, plan_name: str | None, cycle: str | None, proration: str | None = None) -> PlanChange:
    """Apply a plan change on the existing subscription (never a second subscription), then sync.

    Choosing a plan while a cancellation is pending means staying: the cancellation is withdrawn (audited as
    `subscription.resumed`, as the Resume button is). An immediate change first releases a pending downgrade's
    schedule, so that its next phase cannot apply later over what was just paid for.

    `proration` (the confirmation page's token, `proration_token`): an immediate change prorates at its preview's
    time, so the amount charged is the amount shown; a token that is not valid raises PreviewExpired before
    anything changes. Without one (the API) Stripe prorates at the time of the update. The amount due now is the
    one of the invoice the change made (no second preview).
    """
    change = plan_change(user, plan_name, cycle, preview=False)
    subscription = change.subscription
    proration_date = None
    if change.immediate and proration is not None:
        proration_date = carried_proration_date(proration, change)
    key = f"change-{subscription.stripe_subscription_id}-{change.price_id}-{state_stamp(subscription)}"
    if proration_date is not None:
        key += f"-at-{proration_date}"  # two confirmations of one change, priced at two times, are two requests
    sub = stripe_gateway.retrieve_subscription(subscription.stripe_subscription_id, expand=["schedule"])
    if proration_date is not None and proration_date < sub["items"]["data"][0]["current_period_start"]:
        # Renewed since the preview: Stripe prorates within the current period only.
        raise PreviewExpired("Your billing period has renewed since this amount was worked out: here is the new one.")
    if change.immediate:
        release_schedule(sub)
        params: dict[str, Any] = {
            "items": [{"id": sub["items"]["data"][0]["id"], "price": change.price_id}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete",
            "expand": ["latest_invoice"],
        }
        if proration_date is not None:
            params["proration_date"] = proration_date
        params.update(withdraw_cancellation_params(sub))
        updated = stripe_gateway.update_subscription(subscription.stripe_subscription_id, params, idempotency_key=key)
        change = replace(change, proration_date=proration_date, **invoiced_now(sub, updated))
    else:
        if cancellation_pending(sub):
            # Stripe will not change the cancellation of a subscription a schedule manages: a schedule left
            # attached next to a cancellation (as this bug used to leave them) is released first.
            if release_schedule(sub):
                sub["schedule"] = None
            stripe_gateway.update_subscription(
                subscription.stripe_subscription_id, withdraw_cancellation_params(sub), idempotency_key=key + "-resume"
            )
        schedule_id = schedule_downgrade(subscription, sub, change.price_id, key)
        audit.record(
            "subscription.downgrade_scheduled",
            user.id,
            subscription=subscription.stripe_subscription_id,
            plan=change.plan.name,
            cycle=change.cycle,
            at=change.effective_at.isoformat() if change.effective_at else None,
        )
        changed_at_stripe(user, subscription)
        queue_change_scheduled_mail(user, change, schedule_id)
    sync_customer(customer_id_of_user(user))
    if not change.immediate:
        mail.request_delivery()  # the mail is committed with the sync: the sync's own mails are not about it
    return change


def invoiced_now(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The amounts of the invoice an update made (its `latest_invoice`, expanded), as PlanChange fields; nothing
    when the update made no invoice."""
    invoice = after.get("latest_invoice")
    if not isinstance(invoice, dict) or invoice.get("id") == id_of(before.get("latest_invoice")):
        return {"amount_due_now": 0, "invoice_total": 0}
    return {
        "amount_due_now": int(invoice.get("amount_due") or 0),
        "currency": invoice.get("currency") or "usd",
        "invoice_total": int(invoice.get("total") or 0),
    }


def queue_change_scheduled_mail(user: User, change: PlanChange, schedule_id: str) -> None:
    """Tell the customer, in writing, that their plan will move to a cheaper one at the period end (as a scheduled
    cancellation is told): when, what it will cost, what it takes away, and how to keep the current plan. One mail
    per scheduled change: asking for the same change again finds its row (the key names the schedule, the price and
    the date), and so does the sync, which mails a change scheduled elsewhere (the Customer Portal) with the same row
    (`sync.plan_change_scheduled_row`) when it reads this one back. Withdrawn ("Keep", a cancellation) and asked for
    again, the change is a new schedule: mailed again."""
    subscription = change.subscription
    # The user's lock first, as every writer of a subscription's mail takes it (`sync.outbox_entry`): the webhook
    # that brings this schedule back (the sync's mail of it, under this key) then waits for this transaction and
    # finds the mail, instead of waiting on its key while this transaction waits for the user (a deadlock).
    db.session.execute(select(User.id).where(User.id == user.id).with_for_update())
    row = plan_change_scheduled_row(
        user,
        subscription.stripe_subscription_id,
        schedule_id,
        change.price_id,
        (subscription.plan, subscription.billing_cycle),
        (change.plan, change.cycle),
        change.effective_at,
    )
    db.session.execute(mail.INSERT_MAIL, row)


def withdraw_cancellation_params(sub: dict[str, Any]) -> dict[str, Any]:
    """The update that withdraws a pending cancellation (at period end, or at a date the Portal set)."""
    if sub.get("cancel_at_period_end"):
        return {"cancel_at_period_end": False}
    if sub.get("cancel_at") is not None:
        return {"cancel_at": ""}  # Stripe's way to unset a field
    return {}


def schedule_downgrade(subscription: UserSubscription, sub: dict[str, Any], price_id: str, key: str) -> str:
    """At period end, move to the cheaper price: a subscription schedule with two phases (now, then new); its id.

    The schedule attached is updated when it already makes this change (asked for twice: one schedule, one mail).
    One making another change is released and a new one made: a schedule names the change it was made for
    (`sync.scheduled_change_key`), so a change replaced by another and then asked for again is a new schedule,
    mailed again, as the customer's last mail must say what will happen. `sub` has its schedule expanded."""
    schedule_id = id_of(sub.get("schedule"))
    if schedule_id and [price for price, _ in scheduled_price_changes(sub)][:1] != [price_id]:
        release_schedule(sub)
        schedule_id = None
    if not schedule_id:
        schedule = stripe_gateway.create_subscription_schedule(
            subscription.stripe_subscription_id, idempotency_key=key + "-schedule"
        )
        schedule_id = schedule["id"]
    item = sub["items"]["data"][0]
    stripe_gateway.update_subscription_schedule(
        schedule_id,
        {
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": item["price"]["id"], "quantity": 1}],
                    "start_date": item["current_period_start"],
                    "end_date": item["current_period_end"],
                },
                {"items": [{"price": price_id, "quantity": 1}], "proration_behavior": "none"},
            ],
        },
        idempotency_key=key + "-phases",
    )
    return schedule_id


@dataclass(frozen=True)
class ScheduledChange:
    """A plan change a subscription schedule will make later (a downgrade at the end of the paid period)."""

    plan_name: str
    plan_display: str
    cycle: str
    at: datetime | None


def scheduled_change_of(sub: dict[str, Any]) -> ScheduledChange | None:
    """The first phase of the subscription's schedule still to come, if it moves to another price we sell
    (`sync.scheduled_price_changes`: the rule the sync's mail of a scheduled change reads it by)."""
    for price_id, start in scheduled_price_changes(sub):
        found = plan_for_price(price_id)
        if found:
            plan, cycle = found
            return ScheduledChange(plan.name, plan.display_name, cycle, from_timestamp(start))
    return None
