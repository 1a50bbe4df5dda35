from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from app.account.forms import LoginForm, LogoutForm, SignupForm
from app.extensions import limiter
from app.services.accounts import AccountError, authenticate, create_user
from app.services.billing_summary import plan_outlook
from app.services.catalog import chosen_plan
from app.services.queries import effective_plan, effective_subscription
from app.services.strategies import usage_summary


bp = Blueprint("account", __name__)


def safe_next(target: str | None) -> str | None:
    """Only same-site paths are followed after log-in; anything with a scheme or host is an open redirect."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


def start_session(user) -> None:
    """Log the user in with a fresh session (no fixation: whatever the visitor carried is dropped)."""
    session.clear()
    login_user(user)
    session.permanent = True


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    """Create a free account and log in; with a plan chosen on the pricing page, go on to review and pay for it.

    The choice travels in the query string (`?plan=pro&cycle=monthly`, kept by the form's action); one that names
    no paid plan on sale is ignored and the visitor simply signs up for Free.
    """
    choice = chosen_plan(request.args.get("plan"), request.args.get("cycle"))
    review_url = url_for("billing.review_checkout", plan=choice.plan.name, cycle=choice.cycle) if choice else None
    if current_user.is_authenticated:
        return redirect(review_url or url_for("account.show_account"))
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user = create_user(form.email.data, form.password.data)
        except AccountError as exc:
            form.email.errors.append(exc.message) if exc.code == "email_taken" else form.password.errors.append(exc.message)
        else:
            start_session(user)
            if review_url:
                flash(f"Welcome! Your account is ready: confirm {choice.plan.display_name} below to upgrade.", "success")
                return redirect(review_url)
            flash("Welcome! Your account is on the Free plan.", "success")
            return redirect(url_for("account.show_account"))
    status = 400 if form.is_submitted() else 200
    return render_template("account/signup.html", form=form, choice=choice, review_url=review_url), status


def login_limit() -> str:
    return current_app.config["RATELIMIT_LOGIN"]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, methods=["POST"])
def login():
    """Log in with email and password."""
    if current_user.is_authenticated:
        return redirect(url_for("account.show_account"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            start_session(user)
            return redirect(safe_next(form.next.data) or url_for("account.show_account"))
        form.password.errors.append("Email or password is incorrect.")
    status = 400 if form.is_submitted() else 200
    return render_template("account/login.html", form=form), status


@bp.post("/logout")
def logout():
    """Log out (POST with CSRF only)."""
    form = LogoutForm()
    if form.validate_on_submit():
        logout_user()
        session.clear()
        flash("You have been logged out.", "info")
    return redirect(url_for("pricing.show_pricing"))


@bp.get("/account")
@login_required
def show_account():
    """The user's email, current plan and what happens to it next, and usage against the plan's limits."""
    subscription = effective_subscription(current_user.id)
    return render_template(
        "account/account.html",
        plan=effective_plan(current_user.id),
        subscription=subscription,
        outlook=plan_outlook(current_user, subscription),
        usage=usage_summary(current_user.id),
    )
