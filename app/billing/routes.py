from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.billing import bp
from app.urls import external_url
from app.billing.forms import ActionForm, ChoosePlanForm, PortalForm
from app.extensions import limiter
from app.services import DomainError
from app.services.billing_summary import billing_summary, plan_outlook
from app.services.catalog import free_limit, losses_on_free
from app.services.checkout import (
    PlanChangeRequired,
    create_portal_session,
    fulfil_checkout,
    review_choice,
    start_checkout,
    sync_after_portal,
)
from app.services.strategies import count_strategies
from app.services.subscriptions import change_plan, live_subscription, plan_change, set_cancel_at_period_end
from app.templating import date


def billing_limit() -> str:
    return current_app.config["RATELIMIT_BILLING"]


def user_key() -> str:
    """Rate-limit billing per user (browser session or API token), not per address."""
    from app.api.common import rate_limit_identity

    return rate_limit_identity()


def portal_return_url() -> str:
    """Where the Portal's return link leads: the billing page, which then syncs (`?from=portal`)."""
    return external_url("billing.show_billing", **{"from": "portal"})


def form_errors(form) -> str:
    return " ".join(error for errors in form.errors.values() for error in errors)


@bp.get("")
@login_required
def show_billing():
    """Plan, status, dates, card, invoices, and the buttons to change them."""
    if request.args.get("from") == "portal":  # the Portal's return link: show what was changed there at once
        sync_after_portal(current_user.id)
    return render_template("billing/index.html", summary=billing_summary(current_user),
                           action_form=ActionForm(), portal_form=PortalForm())


@bp.get("/checkout")
@login_required
def review_checkout():
    """Free → paid, first step: the chosen plan, its price and features, and the button on to Stripe Checkout.

    The pricing page sends visitors here through sign-up or log-in (`?plan=pro&cycle=yearly`): a POST cannot
    survive those redirects. A paying user goes to the plan-change confirmation instead.
    """
    form = ChoosePlanForm(request.args, meta={"csrf": False})
    if not form.validate():
        flash(form_errors(form), "danger")
        return redirect(url_for("pricing.show_pricing"), 303)
    try:
        choice = review_choice(current_user.id, form.plan.data, form.cycle.data)
    except PlanChangeRequired:
        return redirect(url_for("billing.confirm_change", plan=form.plan.data, cycle=form.cycle.data), 303)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("pricing.show_pricing"), 303)
    return render_template("billing/review_checkout.html", choice=choice,
                           form=ChoosePlanForm(formdata=None, plan=choice.plan.name, cycle=choice.cycle))


@bp.post("/checkout")
@login_required
@limiter.limit(billing_limit, key_func=user_key)
def start_checkout_session():
    """Free → paid: 303 to Stripe Checkout; a paying user goes to the plan-change confirmation instead."""
    form = ChoosePlanForm()
    if not form.validate_on_submit():
        flash(form_errors(form) or "Please choose a plan and a billing cycle.", "danger")
        return redirect(url_for("pricing.show_pricing"), 303)
    try:
        checkout = start_checkout(
            current_user.id, form.plan.data, form.cycle.data,
            success_url=external_url("billing.show_success") + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=external_url("pricing.show_pricing"),
        )
    except PlanChangeRequired:
        return redirect(url_for("billing.confirm_change", plan=form.plan.data, cycle=form.cycle.data), 303)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("pricing.show_pricing"), 303)
    return redirect(checkout.url, 303)


@bp.get("/success")
@login_required
def show_success():
    """Back from Checkout: sync now (no waiting for the webhook) and show the new plan; reloading is harmless."""
    session_id = request.args.get("session_id", "")
    if not session_id.startswith("cs_"):
        abort(404)
    try:
        fulfilment = fulfil_checkout(session_id, current_user.id)
    except DomainError as error:
        if error.status == 404:
            abort(404)
        raise
    summary = billing_summary(current_user) if fulfilment.paid else None
    return render_template("billing/success.html", fulfilment=fulfilment, summary=summary)


@bp.get("/change")
@login_required
def confirm_change():
    """The confirmation page of a plan change: what changes, when, and the amount due now."""
    form = ChoosePlanForm(request.args, meta={"csrf": False})
    if not form.validate():
        flash(form_errors(form), "danger")
        return redirect(url_for("pricing.show_pricing"), 303)
    try:
        change = plan_change(current_user, form.plan.data, form.cycle.data)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("billing.show_billing"), 303)
    return render_template("billing/confirm_change.html", change=change, form=ChoosePlanForm(formdata=None,
                           plan=form.plan.data, cycle=form.cycle.data))


@bp.post("/change")
@login_required
@limiter.limit(billing_limit, key_func=user_key)
def apply_change():
    """Apply a confirmed plan change to the existing subscription."""
    form = ChoosePlanForm()
    if not form.validate_on_submit():
        flash(form_errors(form), "danger")
        return redirect(url_for("billing.show_billing"), 303)
    try:
        change = change_plan(current_user, form.plan.data, form.cycle.data)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("billing.show_billing"), 303)
    withdrawn = " Your cancellation is withdrawn." if change.withdraws_cancellation else ""
    if change.immediate:
        flash(f"You are now on {change.plan.display_name} ({change.cycle}).{withdrawn}", "success")
    else:
        flash(f"Your plan changes to {change.plan.display_name} ({change.cycle}) at the end of the current period."
              f"{withdrawn}", "success")
    return redirect(url_for("billing.show_billing"), 303)


@bp.post("/portal")
@login_required
@limiter.limit(billing_limit, key_func=user_key)
def open_portal():
    """303 to the Stripe Customer Portal (optionally straight into a flow such as updating the card)."""
    form = PortalForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        url = create_portal_session(current_user.id, portal_return_url(), flow=form.flow.data or None)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("billing.show_billing"), 303)
    return redirect(url, 303)


@bp.get("/cancel")
@login_required
def confirm_cancel():
    """The confirmation page of a cancellation: until when the plan lasts, what Free leaves out, what is dropped."""
    subscription = live_subscription(current_user.id)
    if subscription is None or current_user.stripe_customer_id is None:
        flash("You are on the Free plan: there is no paid plan to cancel.", "info")
        return redirect(url_for("billing.show_billing"), 303)
    if subscription.cancel_at_period_end:
        flash(f"Your {subscription.plan.display_name} plan is already set to end on "
              f"{date(subscription.current_period_end)}. Resume it below to keep it.", "info")
        return redirect(url_for("billing.show_billing"), 303)
    return render_template(
        "billing/confirm_cancel.html", subscription=subscription, form=ActionForm(),
        # What Stripe's schedule holds (a pending downgrade, which the cancellation releases): the account page's
        # cached read, not a new one.
        outlook=plan_outlook(current_user, subscription),
        losses=losses_on_free(subscription.plan.name),
        strategies=count_strategies(current_user.id), free_strategies=free_limit("strategies_max"),
    )


def set_cancel(cancel: bool):
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        subscription = set_cancel_at_period_end(current_user, cancel)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("billing.show_billing"), 303)
    if cancel:
        flash(f"Your {subscription.plan.display_name} plan will end on "
              f"{current_app.jinja_env.filters['date'](subscription.current_period_end)}. You keep it until then.",
              "info")
    else:
        flash(f"Welcome back — your {subscription.plan.display_name} plan will renew.", "success")
    return redirect(url_for("billing.show_billing"), 303)


@bp.post("/cancel")
@login_required
def cancel_subscription():
    """Cancel at period end: access continues until the paid period ends."""
    return set_cancel(True)


@bp.post("/resume")
@login_required
def resume_subscription():
    """Undo a scheduled cancellation."""
    return set_cancel(False)
