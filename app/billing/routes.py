"""Billing pages: Checkout, Portal, plan changes, cancel and resume.

A refusal of the domain (a DomainError) is flashed and the person sent back with a 303 to the page they came
from (`@refusals_go_to`), as the API answers it with JSON (app/errors.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.billing.forms import ActionForm, ChoosePlanForm, PortalForm
from app.extensions import limiter
from app.ratelimits import billing_limit, may_refresh_from_stripe, rate_limit_identity, stripe_refresh_limit
from app.services import DomainError, viewer
from app.services.accounts import email_confirmation_pending, require_verified_email
from app.services.billing_summary import billing_summary, plan_outlook
from app.services.catalog import catalog, free_limit, losses_between, losses_on_free, remember_plan_choice
from app.services.checkout import (
    PlanChangeRequired,
    create_portal_session,
    fulfil_checkout,
    review_choice,
    start_checkout,
    sync_after_portal,
)
from app.services.strategies import count_strategies
from app.services.stripe_gateway import PaymentDeclined
from app.services.subscriptions import (
    PreviewExpired,
    change_plan,
    keep_current_plan,
    paid_subscription,
    plan_change,
    proration_token,
    set_cancel_at_period_end,
)
from app.templating import date
from app.urls import external_url

bp = Blueprint("billing", __name__)


class FormRefused(DomainError):
    """A billing form that does not validate: its errors, flashed like any other refusal (to `back_to`, when the
    form's own page is not where the view's other refusals go)."""

    code = "invalid_form"

    def __init__(self, message: str, back_to: str | None = None):
        super().__init__(message)
        self.back_to = back_to


def refusals_go_to(endpoint: str) -> Callable:
    """A view whose DomainError is flashed ("danger") and answered with a 303 to `endpoint`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def refusing(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except DomainError as error:
                flash(error.message, "danger")
                return redirect(url_for(getattr(error, "back_to", None) or endpoint), 303)

        return refusing

    return decorator


def validated(form, fallback: str = "", back_to: str | None = None):
    """The form once it validates (the CSRF token included, unless the form has none); otherwise FormRefused
    naming its errors, or `fallback` when it names none."""
    if not form.validate():
        raise FormRefused(" ".join(error for errors in form.errors.values() for error in errors) or fallback, back_to)
    return form


@bp.get("")
@login_required
def show_billing():
    """Plan, status, dates, card, invoices, and the buttons to change them."""
    # The Portal's return link: show what was changed there at once (within the user's Stripe refresh budget). A
    # URL without a query string has no `from`: its absent query is not parsed.
    this = request._get_current_object()
    if this.query_string and this.args.get("from") == "portal" and may_refresh_from_stripe(current_user.id):
        sync_after_portal(current_user.id)
    # The page's forms carry only the CSRF token (and fixed hidden fields): no form objects are built for them.
    # The summary reads the user's id and customer id a few times: from the object, not through the proxy.
    user = current_user._get_current_object()
    summary = billing_summary(user)
    # Viewed again with nothing changed (the log-in check's rows, the plans as the catalogue holds them, Stripe's
    # summary): the page rendered before (`KeptPages`).
    rows = viewer.read_values(user.id)
    inputs = (rows, catalog(), summary.page_inputs()) if rows is not None else None
    pages = current_app.extensions["kept_pages"]  # templating.KeptPages
    return pages.page(inputs, lambda: render_template("billing/index.html", summary=summary))


@bp.get("/checkout")
@login_required
@refusals_go_to("pricing.show_pricing")
def review_checkout():
    """Free → paid, first step: the chosen plan, its price and features, and the button on to Stripe Checkout.

    The pricing page sends visitors here through sign-up or log-in (`?plan=pro&cycle=yearly`): a POST cannot
    survive those redirects. A paying user goes to the plan-change confirmation instead.
    """
    form = validated(ChoosePlanForm(request.args, meta={"csrf": False}))
    try:
        choice = review_choice(current_user.id, form.plan.data, form.cycle.data)
    except PlanChangeRequired:
        return redirect(url_for("billing.confirm_change", plan=form.plan.data, cycle=form.cycle.data), 303)
    confirm_email_first = email_confirmation_pending(current_user)
    if confirm_email_first:  # the link mailed at sign-up names no plan: this browser remembers the choice for it
        remember_plan_choice(choice.plan.name, choice.cycle)
    return render_template(
        "billing/review_checkout.html",
        choice=choice,
        form=ChoosePlanForm(formdata=None, plan=choice.plan.name, cycle=choice.cycle),
        confirm_email_first=confirm_email_first,
    )


@bp.post("/checkout")
@login_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@refusals_go_to("pricing.show_pricing")
def start_checkout_session():
    """Free → paid: 303 to Stripe Checkout; a paying user goes to the plan-change confirmation instead."""
    form = validated(ChoosePlanForm(), fallback="Please choose a plan and a billing cycle.")
    if email_confirmation_pending(current_user):
        # The pricing page's button of a member who has not confirmed the address yet: the review of that plan
        # says what to do and keeps the choice for after the confirmation (the account page lost it).
        return redirect(url_for("billing.review_checkout", plan=form.plan.data, cycle=form.cycle.data), 303)
    require_verified_email(current_user)
    try:
        checkout = start_checkout(
            current_user.id,
            form.plan.data,
            form.cycle.data,
            cancel_url=external_url(
                "pricing.show_pricing", checkout="left", plan=form.plan.data, cycle=form.cycle.data
            ),
        )
    except PlanChangeRequired:
        return redirect(url_for("billing.confirm_change", plan=form.plan.data, cycle=form.cycle.data), 303)
    return redirect(checkout.url, 303)


@bp.get("/success")
@login_required
@limiter.limit(stripe_refresh_limit, key_func=rate_limit_identity)
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
@refusals_go_to("billing.show_billing")
def confirm_change():
    """The confirmation page of a plan change: what changes, when, and the amount due now.

    A bad choice goes back to the plans; a change that cannot be made, to the billing page.
    """
    form = validated(ChoosePlanForm(request.args, meta={"csrf": False}), back_to="pricing.show_pricing")
    change = plan_change(current_user, form.plan.data, form.cycle.data)
    losses = [] if change.immediate else losses_between(change.subscription.plan.name, change.plan.name)
    return render_template(
        "billing/confirm_change.html",
        change=change,
        losses=losses,
        form=ChoosePlanForm(formdata=None, plan=form.plan.data, cycle=form.cycle.data),
        proration=proration_token(change),  # posted back: the change prorates as this preview did
    )


@bp.post("/change")
@login_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@refusals_go_to("billing.show_billing")
def apply_change():
    """Apply a confirmed plan change to the existing subscription, at the amount its confirmation page showed (the
    page's `proration` token); a token over an hour old, or not this change's, shows the page again, re-priced."""
    form = validated(ChoosePlanForm())
    try:
        change = change_plan(current_user, form.plan.data, form.cycle.data, proration=request.form.get("proration"))
    except PreviewExpired as expired:
        flash(expired.message, "info")
        return redirect(url_for("billing.confirm_change", plan=form.plan.data, cycle=form.cycle.data), 303)
    except PaymentDeclined as declined:
        # Its own category: the message comes with an "Update card" button (base.html).
        flash(
            f"{declined.message} Nothing changed and nothing was charged: you are still on your current plan.",
            "card-declined",
        )
        return redirect(url_for("billing.show_billing"), 303)
    withdrawn = " Your cancellation is withdrawn." if change.withdraws_cancellation else ""
    if change.immediate:
        flash(f"You are now on {change.plan.display_name} ({change.cycle}).{withdrawn}", "success")
    else:
        flash(
            f"Your plan changes to {change.plan.display_name} ({change.cycle}) at the end of the current period."
            f"{withdrawn}",
            "success",
        )
    return redirect(url_for("billing.show_billing"), 303)


@bp.post("/keep")
@login_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@refusals_go_to("billing.show_billing")
def keep_plan():
    """Undo a scheduled downgrade or switch of cycle: the current plan renews as it is."""
    validated(ActionForm(), fallback="The form expired; please try again.")
    # A switch to the plan's other cycle withdrawn keeps the cycle, not the plan.
    subscription, withdrawn = keep_current_plan(current_user)
    renews = date(subscription.current_period_end)
    if withdrawn.plan_name == subscription.plan.name:
        cycle = subscription.billing_cycle
        message = f"You keep {cycle} billing: {subscription.plan.display_name} renews {cycle} on {renews}."
    else:
        message = f"You keep {subscription.plan.display_name}: it renews on {renews}."
    flash(message, "success")
    return redirect(url_for("billing.show_billing"), 303)


@bp.post("/portal")
@login_required
@limiter.limit(billing_limit, key_func=rate_limit_identity)
@refusals_go_to("billing.show_billing")
def open_portal():
    """303 to the Stripe Customer Portal (optionally straight into a flow such as updating the card)."""
    form = PortalForm()
    if not form.validate_on_submit():
        abort(400)
    return redirect(create_portal_session(current_user.id, flow=form.flow.data or None), 303)


@bp.get("/cancel")
@login_required
def confirm_cancel():
    """The confirmation page of a cancellation: until when the plan lasts, what Free leaves out, what is dropped."""
    subscription = paid_subscription(current_user.id)
    if subscription is None or current_user.stripe_customer_id is None:
        flash("You are on the Free plan: there is no paid plan to cancel.", "info")
        return redirect(url_for("billing.show_billing"), 303)
    if subscription.cancel_at_period_end:
        flash(
            f"Your {subscription.plan.display_name} plan is already set to end on "
            f"{date(subscription.current_period_end)}. Resume it below to keep it.",
            "info",
        )
        return redirect(url_for("billing.show_billing"), 303)
    return render_template(
        "billing/confirm_cancel.html",
        subscription=subscription,
        form=ActionForm(),
        # What Stripe's schedule holds (a pending downgrade, which the cancellation releases): the account page's
        # cached read, not a new one.
        outlook=plan_outlook(current_user, subscription),
        losses=losses_on_free(subscription.plan.name),
        strategies=count_strategies(current_user.id),
        free_strategies=free_limit("strategies_max"),
    )


@refusals_go_to("billing.show_billing")
def set_cancel(cancel: bool):
    """Cancel at period end (`cancel`) or resume, from the confirmation form (only its CSRF token)."""
    form = ActionForm()
    if not form.validate_on_submit():
        abort(400)
    subscription = set_cancel_at_period_end(current_user, cancel)
    if cancel:
        flash(
            f"Your {subscription.plan.display_name} plan will end on "
            f"{current_app.jinja_env.filters['date'](subscription.current_period_end)}. You keep it until then.",
            "info",
        )
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
