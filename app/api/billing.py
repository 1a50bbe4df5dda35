"""The billing API (the guide's section 4.2): checkout, portal, plan change, cancel, resume, subscription."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_jwt_extended import jwt_required

from app.api import bp
from app.api.common import ApiError, current_api_user, json_body, rate_limit_identity, string_field
from app.billing.routes import portal_return_url
from app.urls import external_url
from app.extensions import limiter
from app.models import UserSubscription
from app.services.checkout import create_portal_session, start_checkout
from app.services.entitlements import get_entitlements
from app.services.subscriptions import change_plan, live_subscription, plan_change, set_cancel_at_period_end


def billing_limit() -> str:
    return current_app.config["RATELIMIT_BILLING"]


def subscription_json(user_id: int, subscription: UserSubscription | None) -> dict:
    """The user's plan as API clients see it; Free users get plan "free"."""
    entitlements = get_entitlements(user_id)
    features = {k: v for k, v in entitlements.items() if k != "plan"}
    if subscription is None:
        return {"plan": "free", "billing_cycle": None, "status": None, "current_period_end": None,
                "cancel_at_period_end": False, "features": features}
    return {
        "plan": subscription.plan.name,
        "billing_cycle": subscription.billing_cycle,
        "status": subscription.status,
        "current_period_end": subscription.current_period_end.isoformat() if subscription.current_period_end else None,
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "features": features,
    }


@bp.post("/billing/checkout")
@jwt_required()
@limiter.limit(billing_limit, key_func=rate_limit_identity)
def create_checkout():
    """Start Stripe Checkout for a paid plan: `{"plan_name", "billing_cycle"}` → `{"checkout_url", "session_id"}`."""
    user = current_api_user()
    data = json_body()
    checkout = start_checkout(
        user.id, string_field(data, "plan_name", 32), string_field(data, "billing_cycle", 16),
        success_url=external_url("billing.show_success") + "?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=external_url("pricing.show_pricing"),
    )
    return jsonify(checkout_url=checkout.url, session_id=checkout.session_id)


@bp.post("/billing/portal")
@jwt_required()
@limiter.limit(billing_limit, key_func=rate_limit_identity)
def create_portal():
    """A Customer Portal URL: `{"portal_url"}`."""
    user = current_api_user()
    return jsonify(portal_url=create_portal_session(user.id, portal_return_url()))


@bp.post("/billing/change-plan")
@jwt_required()
@limiter.limit(billing_limit, key_func=rate_limit_identity)
def change_subscription_plan():
    """Change a paying user's plan on the existing subscription; `"preview": true` only prices it."""
    user = current_api_user()
    data = json_body()
    plan_name, cycle = string_field(data, "plan_name", 32), string_field(data, "billing_cycle", 16)
    preview = data.get("preview", False)
    if not isinstance(preview, bool):  # "true", 1 or null must not fall through to applying (and charging) it
        raise ApiError("'preview' must be true or false.", code="invalid_field")
    change = plan_change(user, plan_name, cycle) if preview else change_plan(user, plan_name, cycle)
    return jsonify(
        plan=change.plan.name, billing_cycle=change.cycle, kind=change.kind, applied=not preview,
        amount_due_now=change.amount_due_now, currency=change.currency,
        effective_at=change.effective_at.isoformat() if change.effective_at else None,
    )


@bp.post("/billing/cancel")
@jwt_required()
def cancel():
    """Cancel at period end; the plan stays until then."""
    user = current_api_user()
    subscription = set_cancel_at_period_end(user, True)
    return jsonify(subscription_json(user.id, subscription))


@bp.post("/billing/resume")
@jwt_required()
def resume():
    """Undo a scheduled cancellation."""
    user = current_api_user()
    subscription = set_cancel_at_period_end(user, False)
    return jsonify(subscription_json(user.id, subscription))


@bp.get("/billing/subscription")
@jwt_required()
def show_subscription():
    """The user's plan, status, period end and features."""
    user = current_api_user()
    return jsonify(subscription_json(user.id, live_subscription(user.id)))
