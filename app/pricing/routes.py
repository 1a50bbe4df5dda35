from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user

from app.security import may_be_logged_in
from app.services.billing_summary import plan_outlook
from app.services.catalog import active_plans, losses_between
from app.services.subscriptions import paid_subscription

bp = Blueprint("pricing", __name__)


@bp.get("/")
def index():
    """The site's front door is the pricing page."""
    return redirect(url_for("pricing.show_pricing"))


@bp.get("/favicon.ico")
def favicon():
    """Browsers and crawlers ask for /favicon.ico whatever a page links: the vendored icon."""
    return redirect(url_for("static", filename="favicon.ico"), 301)


def beyond_free(plans) -> dict[str, list[str]]:
    """Each paid plan's card lists what it adds to Free (under "Everything in Free, plus"), not Free's lines again."""
    return {plan.name: [loss.now for loss in losses_between(plan.name, "free")] for plan in plans if not plan.is_free}


@bp.get("/pricing")
def show_pricing():
    """The three plans with their features, a monthly/yearly switch and the visitor's current plan."""
    plans = active_plans()
    if "_flashes" not in session and (not may_be_logged_in() or not current_user.is_authenticated):
        return anonymous_page(plans)  # a visitor: no user to load when nothing in the request could name one
    subscription = paid_subscription(current_user.id) if current_user.is_authenticated else None
    current_plan_name, current_cycle, scheduled_change = None, None, None
    if subscription is not None:
        scheduled_change = plan_outlook(current_user, subscription).scheduled_change
        current_plan_name, current_cycle = subscription.plan.name, subscription.billing_cycle
    elif current_user.is_authenticated:
        current_plan_name = "free"
    left_checkout = request.args.get("checkout") == "left"
    shown_cycle = request.args.get("cycle") if left_checkout else None
    return render_template(
        "pricing/index.html",
        left_checkout=left_checkout,
        shown_cycle=shown_cycle if shown_cycle in ("monthly", "yearly") else current_cycle,
        plans=plans,
        subscription=subscription,
        current_plan_name=current_plan_name,
        current_cycle=current_cycle,
        scheduled_change=scheduled_change,
        beyond_free=beyond_free(plans),
    )


def anonymous_page(plans) -> bytes:
    """What every visitor who is not logged in sees — no form, no CSRF token, no session, no flashed message — so
    it is rendered once per catalog and process and served as is, as the UTF-8 the response sends (the catalog
    compared by value: a seed that changes a price or a feature renders it anew)."""
    cached = current_app.extensions.get("anonymous_pricing_page")
    if cached is not None and cached[0] == plans:
        return cached[1]
    html = render_template(
        "pricing/index.html",
        plans=plans,
        subscription=None,
        current_plan_name=None,
        current_cycle=None,
        shown_cycle=None,
        left_checkout=False,
        scheduled_change=None,
        beyond_free=beyond_free(plans),
    ).encode()
    current_app.extensions["anonymous_pricing_page"] = (plans, html)
    return html
