"""The billing API: checkout, portal, plan change, cancel, resume, subscription."""

from __future__ import annotations

from flask_jwt_extended import jwt_required

from app.api.blueprint import bp
from app.api.common import current_api_user
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
from app.extensions import limiter
from app.models import UserSubscription
from app.ratelimits import billing_limit, rate_limit_identity
from app.services.accounts import require_verified_email
from app.services.checkout import create_portal_session, start_checkout
from app.services.entitlements import get_entitlements
from app.services.subscriptions import change_plan, live_subscription, plan_change, set_cancel_at_period_end

NO_SUBSCRIPTION = (Error, "No paid subscription (`no_subscription`).")


def subscription_answer(user_id: int, subscription: UserSubscription | None) -> Subscription:
    """The user's plan as API clients see it; Free users get plan "free"."""
    entitlements = get_entitlements(user_id)
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
@jwt_required()
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
@jwt_required()
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
@jwt_required()
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
@jwt_required()
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
    return subscription_answer(user.id, set_cancel_at_period_end(user, True)).respond()


@bp.post("/billing/resume")
@jwt_required()
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
    return subscription_answer(user.id, set_cancel_at_period_end(user, False)).respond()


@bp.get("/billing/subscription")
@jwt_required()
@operation("showSubscription", "billing", {200: (Subscription, "The subscription."), 401: UNAUTHORIZED})
def show_subscription():
    """The user's plan, status, period end and features."""
    user = current_api_user()
    return subscription_answer(user.id, live_subscription(user.id)).respond()
