from flask import flash, redirect, url_for
from flask_login import login_required

from app.billing import bp
from app.billing.forms import ChoosePlanForm


@bp.post("/checkout")
@login_required
def start_checkout():
    """Until Checkout is wired: validate the choice and say that paid plans are coming soon."""
    form = ChoosePlanForm()
    if not form.validate_on_submit():
        flash("Please choose a plan and a billing cycle.", "danger")
        return redirect(url_for("pricing.show_pricing"))
    flash("Paid plans are coming soon — you will be able to upgrade here shortly.", "info")
    return redirect(url_for("pricing.show_pricing"))
