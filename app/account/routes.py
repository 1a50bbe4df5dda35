from collections.abc import Callable, Hashable
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from markupsafe import Markup

from app.account.forms import (
    ChangeEmailForm,
    ChangePasswordForm,
    ForgotPasswordForm,
    LoginForm,
    LogoutForm,
    ResetPasswordForm,
    SignupForm,
)
from app.extensions import db, limiter
from app.ratelimits import (
    LOGIN_SCOPE,
    account_mail_limit,
    login_limit,
    posted_email,
    rate_limit_identity,
    signup_email_limit,
    signup_limit,
)
from app.security import PRIVATE_CACHE_CONTROL, SESSION_ID_KEY, safe_next
from app.services import accounts, sessions, viewer
from app.services.accounts import AccountError, authenticate
from app.services.billing_summary import plan_outlook
from app.services.catalog import PlanView, catalog, chosen_plan, remembered_plan_choice
from app.services.entitlements import plan_entitlements
from app.services.strategies import Usage, usage_summary
from app.services.viewer import SubscriptionView
from app.templating import KeptFragments, KeptPages

bp = Blueprint("account", __name__)

#: Each form that sends mail counts against the same budget per client address. None is shared by the whole site
#: (a few clients would spend it for everyone): the mails themselves are capped per account and address they go to
#: (`accounts.send_password_reset`, RATELIMIT_ACCOUNT_MAIL_RECIPIENT).
account_mail_limits = (limiter.shared_limit(account_mail_limit, scope="account-mail", methods=["POST"]),)


def mail_limited(view):
    for limit in account_mail_limits:
        view = limit(view)
    return view


def start_session(user) -> None:
    """Log the user in with a fresh session (no fixation: whatever the visitor carried is dropped), backed by a
    server-side row the cookie names: ending the row ends the cookie, wherever a copy of it is."""
    session.clear()
    row = sessions.start(user.id, sessions.WEB, current_app.permanent_session_lifetime)
    db.session.commit()
    session[SESSION_ID_KEY] = row.id
    login_user(user)
    session.permanent = True


def end_session() -> None:
    """Log out of the browser: the server-side row is revoked, so a copy of the cookie opens nothing either."""
    sessions.revoke(session.get(SESSION_ID_KEY), "logout")
    db.session.commit()
    logout_user()
    session.clear()


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(signup_limit, methods=["POST"])
@limiter.limit(signup_email_limit, key_func=posted_email, scope="signup-email", methods=["POST"])
def signup():
    """Create a free account and mail the link that verifies the address, then ask the person to check their mail
    and log in; with a plan chosen on the pricing page, logging in goes on to review and pay for it.

    The answer is the same for an address that already has an account (its owner is mailed a notice instead:
    `accounts.sign_up`), so the visitor is not logged in here: logging in is what tells who owns an address.
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
            email = accounts.sign_up(
                form.email.data, form.password.data, *((choice.plan.name, choice.cycle) if choice else ())
            )
        except AccountError as exc:
            form.password.errors.append(exc.message)
        else:
            then = f"log in to continue to {choice.plan.display_name}" if choice else "log in"
            flash(f"Check your email: we sent a message to {email}. Open the link in it, then {then}.", "info")
            session[SIGNED_UP_AS_KEY] = email  # the log-in page that follows is filled in, not "Welcome back"
            return redirect(url_for("account.login", next=review_url) if review_url else url_for("account.login"))
    status = 400 if form.is_submitted() else 200
    return render_template("account/signup.html", form=form, choice=choice, review_url=review_url), status


#: The address just given to the sign-up form, kept in this browser's session for the log-in page that follows.
SIGNED_UP_AS_KEY = "signed_up_as"


@bp.route("/login", methods=["GET", "POST"])
@limiter.shared_limit(login_limit, scope=LOGIN_SCOPE, methods=["POST"])
def login():
    """Log in with email and password.

    Right after sign-up the page is filled in with the address just typed and says "Now log in" (it is no one's
    "Welcome back", and it is the same page whether the address had an account: only logging in tells). A member
    whose address waits for confirmation is told so as they log in, unless they go on to a page that says it.
    """
    if current_user.is_authenticated:
        return redirect(url_for("account.show_account"))
    form = LoginForm()
    signed_up_as = session.pop(SIGNED_UP_AS_KEY, None) if request.method == "GET" else None
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
        if isinstance(signed_up_as, str):
            form.email.data = signed_up_as
    if form.validate_on_submit():
        user = authenticate(form.email.data, form.password.data)
        if user is not None:
            start_session(user)
            target = safe_next(form.next.data)
            if target is None and accounts.email_confirmation_pending(user):
                flash(
                    f"One more step: open the link we sent to {user.email} to confirm your email. You need it "
                    "before you can pay for a plan.",
                    "info",
                )
            return redirect(target or url_for("account.show_account"))
        form.password.errors.append("Email or password is incorrect.")
    status = 400 if form.is_submitted() else 200
    return render_template("account/login.html", form=form, signed_up=isinstance(signed_up_as, str)), status


@bp.post("/logout")
def logout():
    """Log out (POST with CSRF only)."""
    form = LogoutForm()
    if form.validate_on_submit():
        end_session()
        flash("You have been logged out.", "info")
    return redirect(url_for("pricing.show_pricing"))


@bp.post("/account/logout-everywhere")
@login_required
def logout_everywhere():
    """End every session and API token of the user, this browser's included, and any pending email-change link."""
    if not LogoutForm().validate_on_submit():
        return redirect(url_for("account.show_account"))
    accounts.sign_out_everywhere(current_user._get_current_object())
    logout_user()
    session.clear()
    flash("You have been logged out everywhere: every browser and API token must log in again.", "info")
    return redirect(url_for("account.login"))


@bp.get("/account")
@login_required
def show_account():
    """The user's email (and Stripe's billing email when it differs), current plan and what happens to it next,
    usage against the plan's limits, and the email, password and session controls."""
    return render_account()


#: The account page's usage counts and email confirmation are read by the log-in check itself (one statement in
#: all); the pages that show the account page again with a form's errors read them in a statement of their own.
viewer.read_with_login_check("account.show_account", accounts.ACCOUNT_FACT_COLUMNS, accounts.account_fact_params)


def render_account(
    password_form: ChangePasswordForm | None = None, email_form: ChangeEmailForm | None = None, status: int = 200
):
    """The account page: its subscription, usage counts and email confirmation come with the log-in check
    (`viewer`), the plan and its features (so its limits) from the catalogue every process keeps. What looks the
    same to everyone (the security card while its forms are blank, a plan's feature list, a usage line for its
    figures) is rendered once per app (`kept_fragment`)."""
    user = current_user._get_current_object()  # the template reads it a few times: not through the proxy
    subscription = viewer.effective_subscription(user.id)
    plan = plan_shown(subscription)
    outlook = plan_outlook(user, subscription)

    def render() -> str:
        facts = accounts.account_facts(user, viewer.page_values(user.id))
        usage = usage_summary(user.id, facts.used, plan_entitlements(plan))
        return render_template(
            "account/account.html",
            user=user,
            plan=plan,
            plan_card=kept_fragment((PLAN_FEATURES, plan), PLAN_FEATURES, plan=plan) if plan else None,
            subscription=subscription,
            outlook=outlook,
            usage_lines=Markup("").join([kept_usage_line(line) for line in usage]),
            security_card=security_card(email_form, password_form),
            email_verified=facts.email_verified,
        )

    if email_form is not None or password_form is not None:  # a form sent back with its errors
        return render(), status
    # Viewed again with nothing changed (the log-in check's rows, the plan as the catalogue holds it, what Stripe
    # said of a scheduled change): the page rendered before (`KeptPages`).
    rows = viewer.read_values(user.id)
    inputs = (rows, plan, outlook.page_inputs()) if rows is not None else None
    pages: KeptPages = current_app.extensions["kept_pages"]
    return pages.page(inputs, render), status


#: The account page's fragments (account.html).
PLAN_FEATURES = "account/_plan_features.html"
SECURITY_CARD = "account/_security.html"
EMAIL_FIELDS = "account/_email_fields.html"
PASSWORD_FIELDS = "account/_password_fields.html"


def kept_fragment(key: Hashable, template: str, **context: Any) -> Markup:
    """`template` rendered with `context` once per app for `key` (which names all the context depends on) and
    the request's URL root; a CSRF token in it is the request's own (`templating.KeptFragments`)."""
    fragments: KeptFragments = current_app.extensions["kept_fragments"]
    return fragments.markup(key, lambda csrf_token: render_template(template, csrf_token=csrf_token, **context))


def security_card(email_form: ChangeEmailForm | None, password_form: ChangePasswordForm | None) -> Markup:
    """The login email, password and session controls: with both forms blank they look the same to everyone but
    for the CSRF token, so they are rendered once per app; a form sent back with its errors is rendered now."""
    if email_form is None and password_form is None:
        fragments: KeptFragments = current_app.extensions["kept_fragments"]
        return fragments.markup(SECURITY_CARD, render_security_card)
    return Markup(render_security_card(email_form=email_form, password_form=password_form))


def render_security_card(
    csrf_token: Callable[[], str] | None = None,
    email_form: ChangeEmailForm | None = None,
    password_form: ChangePasswordForm | None = None,
) -> str:
    """The security card's markup, its forms as given (blank when None) and `csrf_token` for the page's token."""
    token = {"csrf_token": csrf_token} if csrf_token is not None else {}
    return render_template(
        SECURITY_CARD,
        email_fields=form_fields(EMAIL_FIELDS, email_form or ChangeEmailForm),
        password_fields=form_fields(PASSWORD_FIELDS, password_form or ChangePasswordForm),
        **token,
    )


def form_fields(template: str, form: FlaskForm | type[FlaskForm]) -> Markup:
    """A form's fields: a form sent back with its errors, or a blank one of the class (its CSRF token is the
    page's own, outside the fragment)."""
    if not isinstance(form, FlaskForm):
        form = form(formdata=None, meta={"csrf": False})
    return Markup(render_template(template, form=form))


def kept_usage_line(line: Usage) -> Markup:
    """One usage line (the macro of strategies/_usage.html), rendered once per app for its figures: it shows
    nothing else. The macro comes from the module Jinja keeps of the template: an `{% from … import %}` in the
    page would have Jinja compare the whole set of the templates' globals on every render to reuse that module."""
    fragments: KeptFragments = current_app.extensions["kept_fragments"]
    return fragments.markup(("usage_line", line), lambda _: usage_line_macro()(line))


def usage_line_macro() -> Callable[..., Markup]:
    """The usage macro of strategies/_usage.html."""
    return current_app.jinja_env.get_template("strategies/_usage.html").module.usage_line  # type: ignore[attr-defined]


def plan_shown(subscription: SubscriptionView | None) -> PlanView | None:
    """The plan whose features the user has (the subscription's, else Free), as the catalogue holds it."""
    if subscription is not None:
        return subscription.plan
    return next((plan for plan in catalog() if plan.name == "free"), None)


@bp.post("/account/password")
@login_required
@limiter.shared_limit(login_limit, scope=LOGIN_SCOPE)
def change_password():
    """Change the password (the current one is asked); every other session and API token ends, and this browser's
    session is replaced by a new one (a copy of its old cookie opens nothing), so it stays logged in."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            renewed = accounts.change_password(
                current_user,
                form.current.data,
                form.password.data,
                renew_session=current_app.permanent_session_lifetime,
            )
        except AccountError as exc:
            (form.current if exc.code == "wrong_password" else form.password).errors.append(exc.message)
        else:
            session[SESSION_ID_KEY] = renewed  # a new cookie: a copy of the old one names a revoked session
            flash("Your password has been changed; your other sessions have been logged out.", "success")
            return redirect(url_for("account.show_account"))
    return render_account(password_form=form, status=400)


@bp.post("/account/email")
@login_required
@mail_limited
@limiter.limit(account_mail_limit, key_func=rate_limit_identity, scope="email-change")
def change_email():
    """Ask to change the login email: a link goes to the new address, a notice to the current one; nothing
    changes until the link is opened. Counted against the account-mail budgets, and per user."""
    form = ChangeEmailForm()
    if form.validate_on_submit():
        try:
            new_email = accounts.request_email_change(current_user, form.current_password.data, form.new_email.data)
        except AccountError as exc:
            (form.current_password if exc.code == "wrong_password" else form.new_email).errors.append(exc.message)
        else:
            flash(
                f"We sent a link to {new_email}: open it within an hour to make it your login email. "
                "Until then you log in with your current email.",
                "info",
            )
            return redirect(url_for("account.show_account"))
    return render_account(email_form=form, status=400)


@bp.get("/confirm-email-change/<token>")
def confirm_email_change(token: str):
    """Follow the link mailed to the new address: it becomes the login email (whoever is logged in, the link
    names its account); every other session of the account ends, this browser's is kept if it is the account's."""
    try:
        user = accounts.confirm_email_change(token, keep_session=session.get(SESSION_ID_KEY))
    except AccountError as exc:
        flash(exc.message, "warning")
    else:
        flash(f"Your login email is now {user.email}.", "success")
    return redirect(url_for("account.show_account") if current_user.is_authenticated else url_for("account.login"))


@bp.route("/forgot-password", methods=["GET", "POST"])
@mail_limited
def forgot_password():
    """Ask for a reset link; the answer is the same whether or not the email has an account."""
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        accounts.send_password_reset(form.email.data)
        flash(
            "If an account uses this email, a link to reset its password is on its way. It works for an hour.", "info"
        )
        return redirect(url_for("account.login"))
    status = 400 if form.is_submitted() else 200
    return render_template("account/forgot_password.html", form=form), status


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@limiter.shared_limit(login_limit, scope=LOGIN_SCOPE, methods=["POST"])
def reset_password(token: str):
    """Choose a new password from a mailed link; every session and API token of the account ends.

    A link used (the password it was made for has changed), expired or forged answers so as it is opened, before any
    form is shown. The form's page is never stored, not even by the browser (`no-store`): its Back button or a
    reopened tab asks again, and a used link says it is used instead of showing a form that can only fail."""
    if accounts.user_for_reset_token(token) is None:
        flash("This reset link is invalid, used or expired: ask for a new one.", "warning")
        response = redirect(url_for("account.forgot_password"))
        response.headers["Cache-Control"] = PRIVATE_CACHE_CONTROL
        return response
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(token, form.password.data)
        except AccountError as exc:
            form.password.errors.append(exc.message)
        else:
            if current_user.is_authenticated:
                logout_user()
            session.clear()
            flash("Your password has been reset: log in with the new one.", "success")
            return redirect(url_for("account.login"))
    status = 400 if form.is_submitted() else 200
    return render_template("account/reset_password.html", form=form), status, {"Cache-Control": PRIVATE_CACHE_CONTROL}


@bp.get("/verify-email/<token>")
def verify_email(token: str):
    """Follow the mailed link: the address is confirmed (whoever is logged in, the link names its account). A link
    mailed on the way to a paid plan (`?plan=pro&cycle=monthly`) then leads back to reviewing that plan — through
    the log-in page when this browser is not logged in — instead of leaving the choice behind; so does a link
    naming none, opened in the browser of its account where a plan was chosen meanwhile (`remember_plan_choice`)."""
    choice = chosen_plan(request.args.get("plan"), request.args.get("cycle"))
    try:
        user = accounts.verify_email(token)
    except AccountError as exc:
        flash(exc.message, "warning")
    else:
        if choice is None and current_user.is_authenticated and current_user.id == user.id:
            choice = remembered_plan_choice()  # chosen on /pricing while waiting for this link, which names none
        if current_user.is_authenticated:
            flash("Thank you: your email is confirmed.", "success")
        else:  # another browser, or a session that ended: the page that follows is the log-in form
            then = f"continue to {choice.plan.display_name}" if choice else "get started"
            flash(f"Thank you: your email is confirmed. Log in to {then}.", "success")
    review_url = url_for("billing.review_checkout", plan=choice.plan.name, cycle=choice.cycle) if choice else None
    if current_user.is_authenticated:
        return redirect(review_url or url_for("account.show_account"))
    return redirect(url_for("account.login", next=review_url) if review_url else url_for("account.login"))


@bp.post("/account/verify-email")
@login_required
@mail_limited
def resend_verification():
    """Mail the verification link again (a few times an hour per account); sent from the review of a paid plan
    (its `plan` and `cycle` in the form), the new link leads back there, and so does this answer."""
    choice = chosen_plan(request.form.get("plan"), request.form.get("cycle"))
    if LogoutForm().validate_on_submit() and not accounts.is_email_verified(current_user):
        if accounts.send_verification(current_user, *((choice.plan.name, choice.cycle) if choice else ())):
            flash(f"We sent a new link to {current_user.email}.", "info")
        else:
            flash(
                f"We already sent several links to {current_user.email} this hour: open the newest one, or ask "
                "again later.",
                "warning",
            )
    if choice:
        return redirect(url_for("billing.review_checkout", plan=choice.plan.name, cycle=choice.cycle))
    return redirect(url_for("account.show_account"))
