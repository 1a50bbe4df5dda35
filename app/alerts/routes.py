from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from app.alerts.forms import AlertSettingsForm
from app.services.entitlements import cheapest_plan_with, get_entitlements, requires_feature
from app.services.strategies import alert_settings, save_alert_settings

bp = Blueprint("alerts", __name__)


@bp.route("/", methods=["GET", "POST"])
@login_required
@requires_feature("email_alerts")
def edit_alerts():
    """Alert settings; the real-time option shows, disabled with an upgrade link, to plans without it."""
    settings = alert_settings(current_user.id)
    form = AlertSettingsForm(obj=settings)
    if form.validate_on_submit():
        save_alert_settings(current_user.id, form.email_enabled.data, form.realtime_enabled.data)
        flash("Alert settings saved.", "success")
        return redirect(url_for("alerts.edit_alerts"))
    realtime_allowed = get_entitlements(current_user.id).allows("realtime_alerts")
    return render_template(
        "alerts/settings.html",
        form=form,
        realtime_allowed=realtime_allowed,
        realtime_plan=None if realtime_allowed else cheapest_plan_with("realtime_alerts"),
    )
