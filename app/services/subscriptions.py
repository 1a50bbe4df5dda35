"""Subscriptions: the local copy of Stripe's state (`sync_customer`), and the changes people ask for.

The one rule of state (DESIGN.md): Stripe is the source of truth. Every path that learns something changed — the
success page, each webhook, `flask stripe sync` — calls `sync_customer`, which reads the customer's
subscriptions from Stripe and writes `user_subscriptions`, so neither the order nor the number of notifications
can leave the copy wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app.extensions import db
from app.models import ACCESS_STATUSES, LIVE_STATUSES, SubscriptionPlan, User, UserSubscription
from app.services import DomainError, audit
from app.services.catalog import plan_by_name, plan_for_price, validate_choice
from app.logging import get_logger
from app.services.stripe_gateway import gateway, to_dict

log = get_logger(__name__)


class SubscriptionError(DomainError):
    code = "subscription_error"


# ---------------------------------------------------------------------------------------------------------------
# Reading the copy
# ---------------------------------------------------------------------------------------------------------------

def effective_subscription(user_id: int) -> UserSubscription | None:
    """The user's subscription that grants access now, if any (the newest, should Stripe ever hold two)."""
    return db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.user_id == user_id, UserSubscription.status.in_(ACCESS_STATUSES))
        .order_by(UserSubscription.created_at.desc())
        .limit(1)
    )


def live_subscription(user_id: int) -> UserSubscription | None:
    """The user's subscription that is not over yet (access or not): the one a plan change must modify."""
    return db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.user_id == user_id, UserSubscription.status.in_(LIVE_STATUSES))
        .order_by(UserSubscription.created_at.desc())
        .limit(1)
    )


def effective_plan(user_id: int) -> SubscriptionPlan | None:
    """The plan whose features the user has now: the paid plan in good standing (or past due while Stripe
    retries, or canceled at period end until that end), otherwise Free."""
    subscription = effective_subscription(user_id)
    if subscription is not None:
        return subscription.plan
    return plan_by_name("free")


# ---------------------------------------------------------------------------------------------------------------
# Stripe → database
# ---------------------------------------------------------------------------------------------------------------

def from_timestamp(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=timezone.utc) if value else None


@dataclass(frozen=True)
class Snapshot:
    """What the audit trail compares: the parts of a subscription a person cares about."""

    status: str
    plan: str
    cycle: str
    cancel_scheduled: bool
    period_end: datetime | None

    @property
    def grants(self) -> bool:
        return self.status in ACCESS_STATUSES

    @classmethod
    def of(cls, row: UserSubscription) -> Snapshot:
        return cls(row.status, row.plan.name, row.billing_cycle, row.cancel_at_period_end, row.current_period_end)


def transitions(old: Snapshot | None, new: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """The audit actions between two snapshots; none when nothing a person cares about changed."""
    if old is None:
        if new.grants:
            return [("subscription.activated", {"plan": new.plan, "billing_cycle": new.cycle, "status": new.status})]
        if new.status == "canceled":
            return [("subscription.canceled", {"plan": new.plan})]
        return [("subscription.updated", {"status": new.status, "plan": new.plan})]
    actions: list[tuple[str, dict[str, Any]]] = []
    if not old.grants and new.grants:
        actions.append(("subscription.activated", {"plan": new.plan, "billing_cycle": new.cycle, "status": new.status}))
    elif old.status != "canceled" and new.status == "canceled":
        actions.append(("subscription.canceled", {"plan": new.plan, "previous_status": old.status}))
    elif old.status != new.status:
        actions.append(("subscription.updated", {"from_status": old.status, "status": new.status}))
    if (old.plan, old.cycle) != (new.plan, new.cycle):
        actions.append(("subscription.plan_changed", {"from_plan": old.plan, "from_cycle": old.cycle,
                                                      "plan": new.plan, "billing_cycle": new.cycle}))
    if new.status != "canceled":
        if not old.cancel_scheduled and new.cancel_scheduled:
            actions.append(("subscription.cancel_scheduled", {"plan": new.plan, "ends_at": iso(new.period_end)}))
        elif old.cancel_scheduled and not new.cancel_scheduled:
            actions.append(("subscription.resumed", {"plan": new.plan}))
        if old.period_end and new.period_end and new.period_end > old.period_end and old.status == new.status:
            actions.append(("subscription.updated", {"renewed_until": iso(new.period_end)}))
    return actions


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class SyncResult:
    """What a sync or a webhook changed: the user, and the audit actions written (empty when nothing changed)."""

    user_id: int | None
    actions: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    #: One of metrics.PLAN_CHANGE_DIRECTIONS per `subscription.plan_changed` action.
    plan_change_directions: list[str] = field(default_factory=list)
    mail_queued: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def subscription_fields(sub: dict[str, Any]) -> dict[str, Any] | None:
    """The columns of `user_subscriptions` from a Stripe subscription (pinned API shape: periods on the item)."""
    items = (sub.get("items") or {}).get("data") or []
    if not items:
        return None
    item = items[0]
    price = item.get("price") or {}
    price_id = price.get("id") if isinstance(price, dict) else price
    found = plan_for_price(price_id)
    if found is None:
        return None
    plan, cycle = found
    cancel_scheduled = bool(sub.get("cancel_at_period_end")) or (
        sub.get("cancel_at") is not None and sub.get("status") not in ("canceled", "incomplete_expired"))
    return {
        "plan_id": plan.id,
        "plan": plan,
        "billing_cycle": cycle,
        "status": sub["status"],
        "stripe_price_id": price_id,
        "current_period_start": from_timestamp(item.get("current_period_start")),
        "current_period_end": from_timestamp(item.get("current_period_end")),
        "cancel_at_period_end": cancel_scheduled,
        "canceled_at": from_timestamp(sub.get("canceled_at")),
        "ended_at": from_timestamp(sub.get("ended_at")),
        "trial_end": from_timestamp(sub.get("trial_end")),
    }


def customer_id_of(obj: dict[str, Any]) -> str | None:
    customer = obj.get("customer")
    return customer.get("id") if isinstance(customer, dict) else customer


def find_user_for_customer(customer_id: str, lock: bool = True) -> User | None:
    """The user linked to a Stripe customer; links one by the customer's `metadata.user_id` if not yet linked.

    The lookup by id needs no Stripe call; only an unlinked customer costs one (to read its metadata).
    """
    query = select(User).where(User.stripe_customer_id == customer_id)
    user = db.session.scalar(query.with_for_update() if lock else query)
    if user is not None:
        return user
    from app.services.stripe_gateway import StripeObjectMissing

    try:
        customer = to_dict(gateway().call("customers.retrieve", gateway().v1.customers.retrieve, customer_id))
    except StripeObjectMissing:  # not a customer of this account: nothing to link, and retrying cannot help
        log.warning("stripe_customer_not_found", customer=customer_id)
        return None
    return link_customer(customer, (customer.get("metadata") or {}).get("user_id"), lock=lock)


def link_customer(customer: dict[str, Any], user_id: Any, lock: bool = True) -> User | None:
    """Link a Stripe customer to our user `user_id` unless the user already has another customer."""
    if customer.get("deleted"):
        return None
    user_id = str(user_id or "")
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id), with_for_update=lock)
    if user is None or user.stripe_customer_id not in (None, customer["id"]):
        log.warning("stripe_customer_link_refused", customer=customer["id"], user_id=user_id)
        return None
    if user.stripe_customer_id is None:
        user.stripe_customer_id = customer["id"]
        audit.record("customer.linked", user.id, customer=customer["id"])
    return user


def fetch_subscriptions(customer_id: str) -> list[dict[str, Any]]:
    """Every subscription of the customer, whatever its status."""
    stripe_gateway = gateway()
    page = stripe_gateway.call("subscriptions.list", stripe_gateway.v1.subscriptions.list,
                               params={"customer": customer_id, "status": "all", "limit": 100})
    return [to_dict(s) for s in page.auto_paging_iter()]


def event_horizon() -> int | None:
    """`created` of Stripe's newest event, read *before* a sync reads the subscriptions.

    Every event created before the read is at most this old, so a sync stamps its rows with it: a late delivery of
    an older event is then skipped instead of re-applying a state the sync has already moved past (which would
    audit a transition twice), an event of the same second is re-checked with Stripe, and a newer one applies.
    """
    stripe_gateway = gateway()
    page = stripe_gateway.call("events.list", stripe_gateway.v1.events.list, params={"limit": 1})
    return int(page.data[0].created) if page.data else None


def apply_subscription(user: User, sub: dict[str, Any], row: UserSubscription | None, result: SyncResult,
                       event_at: int | None = None) -> UserSubscription | None:
    """Write one Stripe subscription into its row (no commit); audit and queue mail for each transition."""
    fields = subscription_fields(sub)
    if fields is None:
        log.warning("stripe_subscription_unknown_price", subscription=sub.get("id"))
        return row
    old = Snapshot.of(row) if row is not None else None
    if row is None:
        row = UserSubscription(user_id=user.id, stripe_subscription_id=sub["id"])
        db.session.add(row)
    for name, value in fields.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
    if event_at is not None and (row.last_event_at or 0) < event_at:
        row.last_event_at = event_at
    for action, details in transitions(old, Snapshot.of(row)):
        audit.record(action, user.id, subscription=sub["id"], **details)
        result.actions.append(action)
        result.plans.append(row.plan.name)
        result.mail_queued |= queue_transition_mail(action, user, row,
                                                    ended_for=(sub.get("cancellation_details") or {}).get("reason"))
        if action == "subscription.plan_changed":
            result.plan_change_directions.append(plan_change_direction(details["from_plan"], row.plan))
    return row


def plan_change_direction(from_plan: str, to_plan: SubscriptionPlan) -> str:
    """upgrade / downgrade by the plans' tiers (sort_order); the same plan in another cycle is a cycle_change."""
    if from_plan == to_plan.name:
        return "cycle_change"
    previous = plan_by_name(from_plan)
    return "upgrade" if previous is None or to_plan.sort_order > previous.sort_order else "downgrade"


def queue_transition_mail(action: str, user: User, row: UserSubscription, ended_for: str | None = None) -> bool:
    """The mails that follow a transition, keyed by the transition so that none is ever sent twice.

    `ended_for` is Stripe's `cancellation_details.reason`: a subscription ended because its payment failed after
    every retry gets one mail saying so (the last failed attempt sends no dunning mail of its own).
    """
    from app.services.mail import billing_url, queue_mail
    from app.templating import date

    common = {"plan": row.plan.display_name, "cycle": row.billing_cycle, "billing_url": billing_url()}
    if action == "subscription.activated":
        queue_mail("subscription_activated", f"{row.stripe_subscription_id}:activated:{iso(row.current_period_start)}",
                   user, renews=date(row.current_period_end), **common)
    elif action == "subscription.cancel_scheduled":
        queue_mail("cancellation_scheduled", f"{row.stripe_subscription_id}:cancel:{iso(row.current_period_end)}",
                   user, date=date(row.current_period_end), **common)
    elif action == "subscription.canceled":
        queue_mail("subscription_ended", f"{row.stripe_subscription_id}:ended", user,
                   payment_failed=ended_for == "payment_failed", **common)
    else:
        return False
    return True


def rows_by_subscription_id(user: User) -> dict[str, UserSubscription]:
    # populate_existing: rows this session loaded before the user's lock was granted may be stale, and an old
    # snapshot would audit a transition another transaction already audited.
    return {row.stripe_subscription_id: row
            for row in db.session.scalars(select(UserSubscription).where(UserSubscription.user_id == user.id)
                                          .execution_options(populate_existing=True))}


def sync_customer_in_transaction(customer_id: str, result: SyncResult | None = None) -> SyncResult:
    """`sync_customer` without the commit, for callers that own the transaction (the webhook endpoint)."""
    result = result or SyncResult(None)
    user = find_user_for_customer(customer_id)
    if user is None:
        log.warning("stripe_customer_unknown", customer=customer_id)
        return result
    result.user_id = user.id
    rows = rows_by_subscription_id(user)
    horizon = event_horizon()
    for sub in fetch_subscriptions(customer_id):
        rows[sub["id"]] = apply_subscription(user, sub, rows.get(sub["id"]), result, event_at=horizon)
    return result


def sync_customer(customer_id: str) -> SyncResult:
    """Read the customer's subscriptions from Stripe and make `user_subscriptions` equal to them.

    Serialised per user by a row lock taken before reading Stripe, so of two concurrent syncs the later one
    reads the later state. Idempotent: a second call changes nothing and audits nothing.
    """
    result = sync_customer_in_transaction(customer_id)
    db.session.commit()
    after_commit(result)
    return result


def after_commit(result: SyncResult) -> None:
    """After the commit that made a change true: entitlements cache, mail, metrics."""
    from app.services import mail, metrics
    from app.services.billing_summary import forget_plan_outlook
    from app.services.entitlements import invalidate_entitlements_cache

    if result.user_id is None:
        return
    invalidate_entitlements_cache(result.user_id)
    forget_plan_outlook(result.user_id)
    if result.mail_queued:
        mail.deliver_pending()
    for action, plan in zip(result.actions, result.plans):
        if action == "subscription.activated":
            metrics.BILLING_SUBSCRIPTIONS_ACTIVATED.labels(plan=plan).inc()
            log.info("subscription_activated", user_id=result.user_id, plan=plan)
        elif action == "subscription.canceled":
            log.info("subscription_canceled", user_id=result.user_id, plan=plan)
        elif action == "subscription.cancel_scheduled":  # the request is what the cancellation-spike alert watches
            metrics.BILLING_SUBSCRIPTIONS_CANCELED.labels(plan=plan).inc()
            log.info("subscription_updated", user_id=result.user_id, plan=plan, action=action)
        else:
            log.info("subscription_updated", user_id=result.user_id, plan=plan, action=action)
    for direction in result.plan_change_directions:
        metrics.BILLING_PLAN_CHANGES.labels(direction=direction).inc()


# ---------------------------------------------------------------------------------------------------------------
# Changes people ask for
# ---------------------------------------------------------------------------------------------------------------

def require_live_subscription(user: User) -> UserSubscription:
    subscription = live_subscription(user.id)
    if subscription is None or user.stripe_customer_id is None:
        raise SubscriptionError("You have no paid subscription.", code="no_subscription")
    return subscription


def set_cancel_at_period_end(user: User, cancel: bool) -> UserSubscription:
    """Cancel at period end (access continues until then) or resume; Stripe first, then the copy."""
    subscription = require_live_subscription(user)
    if subscription.status == "canceled":
        raise SubscriptionError("This subscription has already ended.", code="subscription_ended", status=409)
    if cancel == subscription.cancel_at_period_end:
        if cancel:
            return subscription  # asking twice is not an error: the answer is the same
        raise SubscriptionError("Your subscription is not set to cancel.", code="not_canceling", status=409)
    stripe_gateway = gateway()
    key = f"cancel-{subscription.stripe_subscription_id}-{int(cancel)}-{int(subscription.updated_at.timestamp())}"
    # A pending downgrade goes: after a cancel there is nothing to downgrade, and "Resume Pro" keeps Pro. Stripe
    # refuses to change the cancellation of a subscription a schedule manages anyway.
    release_schedule(retrieve_subscription(subscription))
    stripe_gateway.call(
        "subscriptions.update", stripe_gateway.v1.subscriptions.update, subscription.stripe_subscription_id,
        params={"cancel_at_period_end": cancel}, options={"idempotency_key": key},
    )
    sync_customer(user.stripe_customer_id)
    return db.session.get(UserSubscription, subscription.id)


def retrieve_subscription(subscription: UserSubscription) -> dict[str, Any]:
    """Stripe's current subscription (its item, its schedule, its pending cancellation)."""
    stripe_gateway = gateway()
    return to_dict(stripe_gateway.call("subscriptions.retrieve", stripe_gateway.v1.subscriptions.retrieve,
                                       subscription.stripe_subscription_id))


def schedule_id_of(sub: dict[str, Any]) -> str | None:
    schedule = sub.get("schedule")
    return schedule.get("id") if isinstance(schedule, dict) else schedule


def release_schedule(sub: dict[str, Any]) -> bool:
    """Detach the subscription's schedule (a pending downgrade), leaving the subscription as it is now.

    Released rather than canceled: canceling a schedule cancels its subscription. Once released, none of its
    phases can apply later.
    """
    schedule_id = schedule_id_of(sub)
    if not schedule_id:
        return False
    stripe_gateway = gateway()
    stripe_gateway.call("subscription_schedules.release", stripe_gateway.v1.subscription_schedules.release,
                        schedule_id, options={"idempotency_key": f"release-{schedule_id}"})
    log.info("subscription_schedule_released", subscription=sub["id"], schedule=schedule_id)
    return True


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
    #: A cancellation is pending: choosing another plan means staying, so the change withdraws it.
    withdraws_cancellation: bool = False

    @property
    def kind(self) -> str:
        return "upgrade" if self.immediate else "downgrade"


def plan_change(user: User, plan_name: str | None, cycle: str | None) -> PlanChange:
    """Describe a change of the user's paid subscription to `plan_name`/`cycle`, with the amount due now.

    The rule (README): a higher tier, or the same tier from monthly to yearly, takes effect now with prorations
    invoiced at once; a lower tier, or yearly to monthly, takes effect at the end of the paid period.
    """
    plan, cycle, price_id = validate_choice(plan_name, cycle)
    subscription = require_live_subscription(user)
    if subscription.plan_id == plan.id and subscription.billing_cycle == cycle:
        raise SubscriptionError(f"You are already on {plan.display_name} {cycle}.", code="already_on_plan", status=409)
    if subscription.status not in ACCESS_STATUSES:
        raise SubscriptionError("Your subscription is not active; update your payment method first.",
                                code="subscription_inactive", status=409)
    current = subscription.plan
    higher_tier = plan.sort_order > current.sort_order
    same_tier_to_yearly = plan.id == current.id and cycle == "yearly"
    immediate = higher_tier or same_tier_to_yearly
    amount, currency = 0, "usd"
    if immediate:
        amount, currency = preview_amount_due(user, subscription, price_id)
    return PlanChange(subscription, plan, cycle, price_id, immediate, amount, currency,
                      None if immediate else subscription.current_period_end,
                      withdraws_cancellation=subscription.cancel_at_period_end)


def preview_amount_due(user: User, subscription: UserSubscription, price_id: str) -> tuple[int, str]:
    """What Stripe would invoice now for swapping the subscription's price (prorations included)."""
    stripe_gateway = gateway()
    item_id = subscription_item_id(subscription)
    preview = to_dict(stripe_gateway.call(
        "invoices.create_preview", stripe_gateway.v1.invoices.create_preview,
        params={"customer": user.stripe_customer_id, "subscription": subscription.stripe_subscription_id,
                "subscription_details": {"items": [{"id": item_id, "price": price_id}],
                                         "proration_behavior": "always_invoice"}},
    ))
    return int(preview.get("amount_due") or 0), preview.get("currency") or "usd"


def subscription_item_id(subscription: UserSubscription) -> str:
    stripe_gateway = gateway()
    sub = to_dict(stripe_gateway.call("subscriptions.retrieve", stripe_gateway.v1.subscriptions.retrieve,
                                      subscription.stripe_subscription_id))
    return sub["items"]["data"][0]["id"]


def change_plan(user: User, plan_name: str | None, cycle: str | None) -> PlanChange:
    """Apply a plan change on the existing subscription (never a second subscription), then sync.

    Choosing a plan while a cancellation is pending means staying: the cancellation is withdrawn (audited as
    `subscription.resumed`, as the Resume button is). An immediate change first releases a pending downgrade's
    schedule, so that its next phase cannot apply later over what was just paid for.
    """
    change = plan_change(user, plan_name, cycle)
    stripe_gateway = gateway()
    subscription = change.subscription
    key = f"change-{subscription.stripe_subscription_id}-{change.price_id}-{int(subscription.updated_at.timestamp())}"
    sub = retrieve_subscription(subscription)
    if change.immediate:
        release_schedule(sub)
        params: dict[str, Any] = {"items": [{"id": sub["items"]["data"][0]["id"], "price": change.price_id}],
                                  "proration_behavior": "always_invoice", "payment_behavior": "error_if_incomplete"}
        params.update(withdraw_cancellation_params(sub))
        stripe_gateway.call("subscriptions.update", stripe_gateway.v1.subscriptions.update,
                            subscription.stripe_subscription_id, params=params, options={"idempotency_key": key})
    else:
        if cancellation_pending(sub):
            # Stripe will not change the cancellation of a subscription a schedule manages: a schedule left
            # attached next to a cancellation (as this bug used to leave them) is released first.
            if release_schedule(sub):
                sub["schedule"] = None
            stripe_gateway.call("subscriptions.update", stripe_gateway.v1.subscriptions.update,
                                subscription.stripe_subscription_id, params=withdraw_cancellation_params(sub),
                                options={"idempotency_key": key + "-resume"})
        schedule_downgrade(subscription, sub, change.price_id, key)
    sync_customer(user.stripe_customer_id)
    return change


def withdraw_cancellation_params(sub: dict[str, Any]) -> dict[str, Any]:
    """The update that withdraws a pending cancellation (at period end, or at a date the Portal set)."""
    if sub.get("cancel_at_period_end"):
        return {"cancel_at_period_end": False}
    if sub.get("cancel_at") is not None:
        return {"cancel_at": ""}  # Stripe's way to unset a field
    return {}


def schedule_downgrade(subscription: UserSubscription, sub: dict[str, Any], price_id: str, key: str) -> None:
    """At period end, move to the cheaper price: a subscription schedule with two phases (now, then new)."""
    stripe_gateway = gateway()
    schedule_id = schedule_id_of(sub)
    if not schedule_id:
        schedule = to_dict(stripe_gateway.call(
            "subscription_schedules.create", stripe_gateway.v1.subscription_schedules.create,
            params={"from_subscription": subscription.stripe_subscription_id},
            options={"idempotency_key": key + "-schedule"},
        ))
        schedule_id = schedule["id"]
    item = sub["items"]["data"][0]
    stripe_gateway.call(
        "subscription_schedules.update", stripe_gateway.v1.subscription_schedules.update, schedule_id,
        params={
            "end_behavior": "release",
            "phases": [
                {"items": [{"price": item["price"]["id"], "quantity": 1}],
                 "start_date": item["current_period_start"], "end_date": item["current_period_end"]},
                {"items": [{"price": price_id, "quantity": 1}], "proration_behavior": "none"},
            ],
        },
        options={"idempotency_key": key + "-phases"},
    )
