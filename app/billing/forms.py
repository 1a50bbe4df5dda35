from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired

from app.models import BILLING_CYCLES


class ChoosePlanForm(FlaskForm):
    """The choose-plan button on the pricing page."""

    plan = HiddenField(validators=[DataRequired()])
    cycle = HiddenField(validators=[DataRequired(), AnyOf(BILLING_CYCLES, message="Choose monthly or yearly.")])
