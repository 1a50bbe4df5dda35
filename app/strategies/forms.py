from flask_wtf import FlaskForm
from wtforms import DateField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from app.services.backtesting import MAX_WINDOW
from app.services.strategies import NAME_MAX, TEXT_MAX, rules_problem


def strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def readable_rules(form, field) -> None:
    """The service's own reading of the rules, so their error shows beside the name's in one answer."""
    problem = rules_problem(field.data)
    if problem:
        raise ValidationError(problem)


class StrategyForm(FlaskForm):
    name = StringField("Name", filters=[strip], validators=[DataRequired(), Length(max=NAME_MAX)])
    description = TextAreaField("Description", filters=[strip], validators=[Length(max=TEXT_MAX)])
    rules = TextAreaField(
        "Rules",
        filters=[strip],
        validators=[Length(max=TEXT_MAX), readable_rules],
        description=f"Two moving-average windows in trading days, written fast=<days> slow=<days> with "
        f"1 ≤ fast < slow ≤ {MAX_WINDOW}, e.g. fast=20 slow=50 (also the default when left empty): "
        f"buy when the fast average closes above the slow one, sell when below.",
    )


class BacktestForm(FlaskForm):
    start_date = DateField("From", validators=[DataRequired(message="Pick a start date.")])
    end_date = DateField("To", validators=[DataRequired(message="Pick an end date.")])


class DeleteForm(FlaskForm):
    """CSRF only."""
