from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.admin.forms import ActionForm, LookupForm
from app.extensions import csrf
from app.security import safe_next
from app.services import DomainError
from app.services.admin import replay_event, sync_user
from app.services.reporting import dashboard, user_report

bp = Blueprint("admin", __name__)


# The global CSRF check would run before `require_admin` and answer 400, telling a stranger the URL exists. The
# actions check the token themselves (ActionForm.validate_on_submit), after the admin check has answered 404.
csrf.exempt(bp)


@bp.before_request
def require_admin():
    """Admins only; to anyone else the dashboard does not exist."""
    if not (current_user.is_authenticated and current_user.is_admin):
        abort(404)


@bp.get("/")  # as /strategies/ and /alerts/ are, served the same (not redirected: to non-admins both are 404 alike)
@bp.get("")  # registered first: the URL url_for builds
def show_dashboard():
    """Revenue, churn, conversions, failed payments, charts, webhook events and the audit log."""
    return render_template(
        "admin/dashboard.html", board=dashboard(), action_form=ActionForm(), lookup_form=LookupForm(formdata=None)
    )


@bp.get("/users")
def lookup_user():
    """One user by email: subscription rows, Stripe events and audit trail."""
    form = LookupForm(request.args)
    if not form.validate():
        flash("Enter an email address to look up.", "warning")
        return redirect(url_for("admin.show_dashboard"))
    report = user_report(form.email.data)
    if report is None:
        flash(f"No user with the email {form.email.data.strip()}.", "warning")
        return redirect(url_for("admin.show_dashboard"))
    return render_template("admin/user.html", report=report, action_form=ActionForm(), lookup_form=form)


@bp.post("/events/<event_id>/replay")
def replay_webhook_event(event_id: str):
    """Run a recorded webhook event's handler again and say how it went."""
    if not ActionForm().validate_on_submit():
        abort(400)
    category, message = replay_event(event_id, current_user.id)
    flash(message, category)
    return redirect(safe_next(request.form.get("next"), prefix="/admin") or url_for("admin.show_dashboard"))


@bp.post("/users/<int:user_id>/sync")
def sync_user_from_stripe(user_id: int):
    """Re-read one user's subscriptions from Stripe (repairs drift) and invalidate their entitlements."""
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        email, actions = sync_user(user_id, current_user.id)
    except LookupError:
        abort(404)
    except DomainError as error:
        flash(error.message, "danger")
        return redirect(url_for("admin.show_dashboard"))
    flash(f"Synced {email} from Stripe: " + (", ".join(actions) if actions else "nothing had drifted."), "success")
    return redirect(url_for("admin.lookup_user", email=email))
