"""The billing API: checkout, portal, plan change, cancel, resume, subscription."""

from __future__ import annotations

from app.api.blueprint import bp
from app.api.common import access_token_required, current_api_user
from app.api.schemas import (
    CheckoutRequest,
    CheckoutSession,
    Error,
    PlanChange,
    PlanChangeRequest,
    PortalSession,
    Subscription,
)
from app.api.spec import BAD_REQUEST, BILLING_ERRORS, UNAUTHORIZED, operation
from app.extensions import autocommit_when_idle, limiter
from app.ratelimits import billing_limit, rate_limit_identity
from app.services import viewer
from app.services.accounts import require_verified_email
from app.services.catalog import plan_view_by_name
from app.services.checkout import create_portal_session, start_checkout
from app.services.entitlements import plan_entitlements
from app.services.subscriptions import change_plan, plan_change, set_cancel_at_period_end

NO_SUBSCRIPTION = (Error, "No paid subscription (`no_subscription`).")


def subscription_answer(user_id: int) -> Subscription:
    """The user's plan as API clients see it (Free users get plan "free"), and its features, from one read.

    The subscription shown and the one granting access come from one statement (`viewer`: the user's live
    subscriptions, read once per transaction), and the features from the latter's plan by `plan_entitlements`, as
    `get_entitlements` computes them. The entitlements cache would be a second read: a webhook committing between
    the two, or a cached entry its commit had not dropped yet, made "plan": "free" come with Pro's features. The
    gates keep the cache; an answer that states the plan states what that same read says it includes.

    A live subscription that grants no access (`incomplete`, `unpaid`, `paused`) shows its plan and status with
    Free's features: what the gates allow, as the payment banner says ("Your Pro features are paused").
    """
    subscription = viewer.live_subscription(user_id)
    granting = viewer.effective_subscription(user_id)  # from the statement just made (the request's memo)
    entitlements = plan_entitlements(granting.plan if granting is not None else plan_view_by_name("free"))
    features = {k: v for k, v in entitlements.items() if k != "plan"}
    if subscription is None:
        return Subscription(
            plan="free",
            billing_cycle=None,
            status=None,
            current_period_end=None,
            cancel_at_period_end=False,
            features=features,
        )
    return Subscription(
        plan=subscription.plan.name,
        billing_cycle=subscription.billing_cycle,
        status=subscription.status,
        current_period_end=subscription.current_period_end,
        cancel_at_period_end=subscription.cancel_at_period_end,
        features=features,
    )


@bp.post("/billing/checkout")
@access_token_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@operation(
    "createCheckout",
    "billing",
    {
        200: (CheckoutSession, "Open `checkout_url` in a browser to pay."),
        400: BAD_REQUEST,
        403: (Error, "The login email is not confirmed yet (`email_unverified`): follow the link mailed at sign-up."),
        409: (
            Error,
            "Already on that plan and cycle (`already_on_plan`), or already paying for another plan "
            "(`plan_change_required`: use /billing/change-plan).",
        ),
        **BILLING_ERRORS,
    },
)
def create_checkout(json: CheckoutRequest):
    """Start Stripe Checkout for a paid plan (users on Free)."""
    user = current_api_user()
    require_verified_email(user)
    checkout = start_checkout(user.id, json.plan_name, json.billing_cycle)
    return CheckoutSession(checkout_url=checkout.url, session_id=checkout.session_id).respond()


@bp.post("/billing/portal")
@access_token_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@operation(
    "createPortal",
    "billing",
    {
        200: (PortalSession, "Open `portal_url` in a browser."),
        400: (Error, "No billing account yet (`no_billing_account`): choose a paid plan first."),
        **BILLING_ERRORS,
    },
)
def create_portal():
    """A Stripe Customer Portal URL (cards, invoices, cancel)."""
    user = current_api_user()
    return PortalSession(portal_url=create_portal_session(user.id)).respond()


@bp.post("/billing/change-plan")
@access_token_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@operation(
    "changePlan",
    "billing",
    {
        200: (PlanChange, "The change, applied or (with `preview`) only priced."),
        400: (Error, "Bad input, or no paid subscription (`no_subscription`)."),
        402: (Error, "The card was declined (`card_declined`); nothing changed."),
        409: (Error, "Already on that plan (`already_on_plan`) or the subscription is not active."),
        **BILLING_ERRORS,
    },
)
def change_subscription_plan(json: PlanChangeRequest):
    """Change a paying user's plan on the existing subscription (never a second one).

    `"preview": true` only prices the change.
    """
    user = current_api_user()
    change = (plan_change if json.preview else change_plan)(user, json.plan_name, json.billing_cycle)
    return PlanChange(
        plan=change.plan.name,
        billing_cycle=change.cycle,
        kind=change.kind,
        applied=not json.preview,
        amount_due_now=change.amount_due_now,
        currency=change.currency,
        effective_at=change.effective_at,
    ).respond()


@bp.post("/billing/cancel")
@access_token_required
@operation(
    "cancelSubscription",
    "billing",
    {
        200: (Subscription, "The subscription, `cancel_at_period_end: true`."),
        400: NO_SUBSCRIPTION,
        409: (Error, "The subscription has already ended (`subscription_ended`)."),
        **BILLING_ERRORS,
    },
)
def cancel():
    """Cancel at period end; the plan stays until then."""
    user = current_api_user()
    set_cancel_at_period_end(user, True)  # the answer reads the subscriptions as the change left them
    return subscription_answer(user.id).respond()


@bp.post("/billing/resume")
@access_token_required
@operation(
    "resumeSubscription",
    "billing",
    {
        200: (Subscription, "The subscription, renewing again."),
        400: NO_SUBSCRIPTION,
        409: (Error, "Not set to cancel (`not_canceling`), or already ended."),
        **BILLING_ERRORS,
    },
)
def resume():
    """Undo a scheduled cancellation."""
    user = current_api_user()
    set_cancel_at_period_end(user, False)
    return subscription_answer(user.id).respond()


@bp.get("/billing/subscription")
@access_token_required
@operation("showSubscription", "billing", {200: (Subscription, "The subscription."), 401: UNAUTHORIZED})
def show_subscription():
    """The user's plan, status, period end and features."""
    user = current_api_user()
    with autocommit_when_idle():  # one read: no transaction to open on the server (BEGIN) nor to end (ROLLBACK)
        answer = subscription_answer(user.id)
    return answer.respond()
