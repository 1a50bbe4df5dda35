from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from app.alerts.forms import AlertSettingsForm, WatchForm
from app.extensions import task_queue
from app.services.alerts import EVALUATION_SCHEDULE, alerts_overview, unwatch_strategy, watch_strategy
from app.services.backtesting import SYMBOL
from app.services.entitlements import cheapest_plan_with, get_entitlements, plan_display_name, requires_feature
from app.services.strategies import alert_settings, save_alert_settings

bp = Blueprint("alerts", __name__)


@bp.route("/", methods=["GET", "POST"])
@login_required
@requires_feature("email_alerts")
def edit_alerts():
    """Alert settings, watched strategies, the latest signals and the next evaluation; the real-time option shows,
    off and disabled with the reason and an upgrade link, to plans without it."""
    settings = alert_settings(current_user.id)
    form = AlertSettingsForm(obj=settings)
    if form.validate_on_submit():
        save_alert_settings(current_user.id, form.email_enabled.data, form.realtime_enabled.data)
        flash("Alert settings saved.", "success")
        return redirect(url_for("alerts.edit_alerts"))
    entitlements = get_entitlements(current_user.id)
    realtime_allowed = entitlements.allows("realtime_alerts")
    return render_template(
        "alerts/settings.html",
        form=form,
        watch_form=WatchForm(),
        overview=alerts_overview(current_user.id),
        plan_name=plan_display_name(entitlements.plan),
        symbol=SYMBOL,
        schedule_text=EVALUATION_SCHEDULE,
        # Without a task queue (`make run`) no scheduler runs the evaluation or the digest: the page says so
        # instead of promising a time.
        scheduled=task_queue() is not None,
        realtime_allowed=realtime_allowed,
        realtime_plan=None if realtime_allowed else cheapest_plan_with("realtime_alerts"),
    )


@bp.post("/strategies/<int:strategy_id>/watch")
@login_required
@requires_feature("email_alerts")
def watch_strategy_page(strategy_id: int):
    """Watch a strategy: the scheduled evaluation looks at it after every close."""
    if WatchForm().validate_on_submit():
        strategy = watch_strategy(current_user.id, strategy_id)
        flash(f"Watching “{strategy.name}”: it is evaluated after every close.", "success")
    return redirect(url_for("alerts.edit_alerts", _anchor="watched"))


@bp.post("/strategies/<int:strategy_id>/unwatch")
@login_required
@requires_feature("email_alerts")
def unwatch_strategy_page(strategy_id: int):
    """Stop watching a strategy (its past signals stay listed)."""
    if WatchForm().validate_on_submit():
        strategy = unwatch_strategy(current_user.id, strategy_id)
        flash(f"Stopped watching “{strategy.name}”.", "success")
    return redirect(url_for("alerts.edit_alerts", _anchor="watched"))
