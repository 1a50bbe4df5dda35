from flask import redirect, render_template, url_for
from flask_login import current_user

from app.pricing import bp
from app.services.catalog import active_plans
from app.services.subscriptions import live_subscription


@bp.get("/")
def index():
    """The site's front door is the pricing page."""
    return redirect(url_for("pricing.show_pricing"))


@bp.get("/pricing")
def show_pricing():
    """The three plans with their features, a monthly/yearly switch and the visitor's current plan."""
    plans = active_plans()
    subscription = live_subscription(current_user.id) if current_user.is_authenticated else None
    current_plan_name, current_cycle = None, None
    if subscription is not None:
        current_plan_name, current_cycle = subscription.plan.name, subscription.billing_cycle
    elif current_user.is_authenticated:
        current_plan_name = "free"
    return render_template(
        "pricing/index.html",
        plans=plans,
        subscription=subscription,
        current_plan_name=current_plan_name,
        current_cycle=current_cycle,
    )
