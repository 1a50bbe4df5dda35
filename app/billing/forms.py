from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired, Optional

from app.models import BILLING_CYCLES
from app.services.checkout import PORTAL_FLOWS


class ChoosePlanForm(FlaskForm):
    """The choose-plan buttons (pricing page) and the plan-change confirmation."""

    plan = HiddenField(validators=[DataRequired(message="Choose a plan.")])
    cycle = HiddenField(
        validators=[
            DataRequired(message="Choose a billing cycle."),
            AnyOf(BILLING_CYCLES, message="Choose monthly or yearly."),
        ]
    )


class PortalForm(FlaskForm):
    flow = HiddenField(validators=[Optional(), AnyOf(PORTAL_FLOWS)])


class ActionForm(FlaskForm):
    """Cancel and resume: only the CSRF token."""
