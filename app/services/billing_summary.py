"""What the billing page shows: the local copy plus what only Stripe knows (card, invoices, scheduled change)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.extensions import cache, db, page_cache, page_cache_drops
from app.logging import get_logger
from app.models import User, UserSubscription
from app.ratelimits import BILLING_SUMMARY_READS, PLAN_OUTLOOK_READS, may_read_stripe
from app.services import DomainError, stripe_gateway, viewer
from app.services.signals import CacheWrites, SyncResult
from app.services.stripe_gateway import from_timestamp, id_of
from app.services.subscriptions import ScheduledChange, scheduled_change_of
from app.services.viewer import SubscriptionView

log = get_logger(__name__)


@dataclass(frozen=True)
class Invoice:
    id: str
    number: str | None
    created: datetime | None
    amount_cents: int
    currency: str
    status: str
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    amount_remaining_cents: int = 0
    next_payment_attempt: datetime | None = None
    subscription_id: str | None = None


def invoice_of(data: dict[str, Any]) -> Invoice:
    """The fields the billing page shows of one Stripe invoice."""
    return Invoice(
        data["id"],
        data.get("number"),
        from_timestamp(data.get("created")),
        int(data.get("total") or 0),
        data.get("currency") or "usd",
        data.get("status") or "",
        data.get("hosted_invoice_url"),
        data.get("invoice_pdf"),
        int(data.get("amount_remaining") or 0),
        from_timestamp(data.get("next_payment_attempt")),
        invoice_subscription_id(data),
    )


def invoice_subscription_id(data: dict[str, Any]) -> str | None:
    """The subscription an invoice bills: under `parent.subscription_details` since API 2025-03-31."""
    details = (data.get("parent") or {}).get("subscription_details") or {}
    return id_of(details.get("subscription"))


@dataclass
class PlanOutlook:
    """What happens to a subscription at the end of its period: it ends (`cancel_at_period_end`), it moves to
    another plan (`scheduled_change`, a future phase of its schedule), or it renews."""

    subscription: UserSubscription | SubscriptionView | None
    scheduled_change: ScheduledChange | None = None
    stripe_unavailable: bool = False

    def page_inputs(self) -> tuple[Any, ...]:
        """Every field's value (a list as a tuple), a field added later included: what a page shows of it, as part
        of the page's key among the pages kept (`templating.KeptPages`)."""
        values = (getattr(self, each.name) for each in fields(self))
        return tuple(tuple(value) if isinstance(value, list) else value for value in values)


@dataclass(frozen=True)
class EndedPlan:
    """The paid plan a Free account had last, and why it ended (Stripe's `cancellation_details.reason`:
    `payment_failed` when the retries ran out, `cancellation_requested` when the customer canceled)."""

    plan_display: str
    ended_at: datetime | None
    reason: str | None
    stripe_subscription_id: str

    @property
    def payment_failed(self) -> bool:
        """Ended because Stripe's retries ran out, not because the customer canceled."""
        return self.reason == "payment_failed"


@dataclass
class BillingSummary(PlanOutlook):
    card_brand: str | None = None
    card_last4: str | None = None
    invoices: list[Invoice] = field(default_factory=list)
    ended: EndedPlan | None = None
    #: The customer's credit balance in cents (Stripe's negative `balance`): later invoices use it up first.
    credit_balance: int = 0

    def left_unpaid(self, invoice: Invoice) -> bool:
        """An invoice still open from a plan that ended because its payment failed: Stripe no longer retries it."""
        return (
            invoice.status == "open"
            and self.ended is not None
            and self.ended.payment_failed
            and invoice.subscription_id == self.ended.stripe_subscription_id
        )

    @property
    def next_amount(self):
        sub = self.subscription
        if sub is None or sub.cancel_at_period_end or sub.status == "canceled":
            return None
        return sub.plan.price_for(sub.billing_cycle)

    @property
    def payment_due(self) -> bool:
        """Stripe holds an unpaid invoice of the subscription and retries it (or has stopped, when unpaid)."""
        return self.subscription is not None and self.subscription.status in ("past_due", "unpaid")

    @property
    def unpaid_invoice(self) -> Invoice | None:
        """The newest open invoice: what a past-due subscription owes, and when Stripe tries the card again."""
        return next((invoice for invoice in self.invoices if invoice.status == "open"), None)


def card_of(payment_method: Any) -> tuple[str | None, str | None]:
    if isinstance(payment_method, dict) and payment_method.get("card"):
        return payment_method["card"].get("brand"), payment_method["card"].get("last4")
    return None, None


#: How long the billing page may reuse what Stripe said (card, invoices, scheduled change, why a plan ended). Every
#: billing commit for the user drops it (`forget_changed_outlook`) — each of the endpoint's events about the user's
#: customer, subscription or invoices ends in one, and so do the Portal's return and every change made here — and it
#: is only reused for the same customer and version of the subscription row.
SUMMARY_CACHE_SECONDS = 600


def _summary_key(user_id: int) -> str:
    return f"billing_summary:{user_id}"


def _cached(key: str) -> Any:
    """The cache entry, or None (also when Redis is down: then Stripe is asked). Read through the connection the
    process keeps for a page's reads (`page_cache`)."""
    try:
        return page_cache().get(key)
    except Exception as error:  # noqa: BLE001 - Redis down
        log.warning("billing_cache_unavailable", error=type(error).__name__)
        return None


def _keep(key: str, value: Any, seconds: int) -> None:
    """Store a cache entry; never raises (without Redis the next view asks Stripe again)."""
    try:
        cache.set(key, value, timeout=seconds)
    except Exception as error:  # noqa: BLE001 - Redis down
        log.warning("billing_cache_unavailable", error=type(error).__name__)


def billing_summary(user: User) -> BillingSummary:
    """The billing page's data: the local copy, plus what only Stripe knows — read once, then reused until the next
    billing commit for the user. Stripe being down, or the user's reads of it for pages spent (RATELIMIT_BILLING),
    degrades to the local copy, never to an error page."""
    summary = BillingSummary(viewer.paid_subscription(user.id))
    if not user.stripe_customer_id:
        return summary
    row = summary.subscription
    version = (user.stripe_customer_id, row.stripe_subscription_id, row.updated_at.isoformat()) if row else None
    cached = _cached(_summary_key(user.id))
    if cached is not None and cached[0] == (user.stripe_customer_id, version) and len(cached[1]) == len(KNOWN):
        (
            summary.card_brand,
            summary.card_last4,
            summary.invoices,
            summary.scheduled_change,
            summary.ended,
            summary.credit_balance,
        ) = cached[1]
        return summary
    if not may_read_stripe(user.id, BILLING_SUMMARY_READS):
        log.warning("billing_summary_budget_spent")
        summary.stripe_unavailable = True
        return summary
    try:
        _ask_stripe(user, user.stripe_customer_id, summary)
    except DomainError as error:
        log.warning("billing_summary_degraded", code=error.code)
        summary.stripe_unavailable = True
        return summary
    known = tuple(getattr(summary, name) for name in KNOWN)
    _keep(_summary_key(user.id), ((user.stripe_customer_id, version), known), SUMMARY_CACHE_SECONDS)
    return summary


#: What the summary keeps of Stripe's answers between billing commits (an entry of another shape is asked again).
KNOWN = ("card_brand", "card_last4", "invoices", "scheduled_change", "ended", "credit_balance")


def _ask_stripe(user: User, customer_id: str, summary: BillingSummary) -> None:
    """Fill in the card, the invoices and the scheduled change (or, for a Free account, how its plan ended)."""
    customer = stripe_gateway.retrieve_customer(customer_id, expand=["invoice_settings.default_payment_method"])
    # Stripe's `balance` is what the customer owes (positive) or has in credit (negative), in cents.
    summary.credit_balance = max(0, -int(customer.get("balance") or 0))
    summary.card_brand, summary.card_last4 = card_of(
        (customer.get("invoice_settings") or {}).get("default_payment_method")
    )
    invoices = stripe_gateway.list_invoices(customer_id, limit=12)
    summary.invoices = [invoice_of(i) for i in invoices if i.get("status") != "draft"]
    if summary.subscription is None:
        summary.ended = ended_plan(user)
        return
    sub = stripe_gateway.retrieve_subscription(
        summary.subscription.stripe_subscription_id, expand=["schedule", "default_payment_method"]
    )
    if summary.card_last4 is None:
        summary.card_brand, summary.card_last4 = card_of(sub.get("default_payment_method"))
    summary.scheduled_change = scheduled_change_of(sub)


def ended_plan(user: User) -> EndedPlan | None:
    """The user's last ended paid subscription, with Stripe's reason for ending it (Stripe is asked: our copy keeps
    no reason)."""
    row = db.session.scalar(
        select(UserSubscription)
        .where(UserSubscription.user_id == user.id, UserSubscription.status.in_(("canceled", "incomplete_expired")))
        .order_by(UserSubscription.ended_at.desc().nulls_last(), UserSubscription.id.desc())
        .limit(1)
    )
    if row is None or row.plan.is_free:
        return None
    sub = stripe_gateway.retrieve_subscription(row.stripe_subscription_id)
    reason = (sub.get("cancellation_details") or {}).get("reason")
    return EndedPlan(
        row.plan.display_name, row.ended_at or from_timestamp(sub.get("ended_at")), reason, row.stripe_subscription_id
    )


#: How long the account page may reuse what Stripe said of a subscription's schedule. Every billing commit for the
#: user drops it (`forget_changed_outlook`, a `subscription_changed` receiver), and it is only reused for the same
#: version of the subscription row.
OUTLOOK_CACHE_SECONDS = 600


def _outlook_key(user_id: int) -> str:
    return f"plan_outlook:{user_id}"


def forget_plan_outlook(user_id: int) -> None:
    """After a billing commit: the next account and billing pages ask Stripe again (every process's copy dropped
    too, `page_cache_drops`). Never raises (the entries then expire)."""
    writes = CacheWrites()
    _drop_outlook(writes, user_id)
    writes.send()


def _drop_outlook(writes: CacheWrites, user_id: int) -> None:
    """Add the drop of the user's outlook and summary to `writes`, and its announcement to the processes that keep
    copies of them (`extensions.PageCacheCopies`)."""

    def failed(error: Exception) -> None:
        log.warning("plan_outlook_cache_unavailable", error=type(error).__name__)

    keys = (_outlook_key(user_id), _summary_key(user_id))
    writes.delete(*keys, on_failure=failed)
    writes.publish(page_cache_drops(), " ".join(keys))  # fails with the delete, which says so


def forget_changed_outlook(sender, change: SyncResult, writes: CacheWrites | None = None, **_) -> None:
    """`subscription_changed` receiver: the committed change may have added or dropped a scheduled change, a card or
    an invoice. The entries are dropped with the announcement's other cache writes (`writes`, one round trip)."""
    if change.user_id is None:
        return
    if writes is None:
        forget_plan_outlook(change.user_id)
        return
    _drop_outlook(writes, change.user_id)


def plan_outlook(user: User, subscription: UserSubscription | SubscriptionView | None) -> PlanOutlook:
    """The account page's line on what comes next: a pending cancellation is in our copy; a scheduled plan change
    only Stripe knows — read once, then reused until the next billing commit for the user or a newer version of
    the row, and only for a subscription that renews. Stripe being down, or the user's reads of it for pages spent
    (RATELIMIT_BILLING), leaves out the scheduled change, never the page."""
    outlook = PlanOutlook(subscription)
    if (
        subscription is None
        or subscription.cancel_at_period_end
        or subscription.status == "canceled"
        or not user.stripe_customer_id
    ):
        return outlook
    version = (subscription.stripe_subscription_id, subscription.updated_at.isoformat())
    cached = _cached(_outlook_key(user.id))
    if cached is not None and cached[0] == version:
        outlook.scheduled_change = cached[1]
        return outlook
    if not may_read_stripe(user.id, PLAN_OUTLOOK_READS):
        log.warning("plan_outlook_budget_spent")
        outlook.stripe_unavailable = True
        return outlook
    try:
        sub = stripe_gateway.retrieve_subscription(subscription.stripe_subscription_id, expand=["schedule"])
    except DomainError as error:
        log.warning("plan_outlook_degraded", code=error.code)
        outlook.stripe_unavailable = True
        return outlook
    outlook.scheduled_change = scheduled_change_of(sub)
    _keep(_outlook_key(user.id), (version, outlook.scheduled_change), OUTLOOK_CACHE_SECONDS)
    return outlook
