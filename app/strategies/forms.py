from flask_wtf import FlaskForm
from wtforms import DateField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.services.strategies import NAME_MAX, TEXT_MAX


def strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class StrategyForm(FlaskForm):
    name = StringField("Name", filters=[strip], validators=[DataRequired(), Length(max=NAME_MAX)])
    description = TextAreaField("Description", filters=[strip], validators=[Length(max=TEXT_MAX)])
    rules = TextAreaField("Rules", filters=[strip], validators=[Length(max=TEXT_MAX)],
                          description="Moving-average crossover windows in trading days, e.g. fast=20 slow=50: "
                                      "buy when the fast average closes above the slow one, sell when below.")


class BacktestForm(FlaskForm):
    start_date = DateField("From", validators=[DataRequired(message="Pick a start date.")])
    end_date = DateField("To", validators=[DataRequired(message="Pick an end date.")])


class DeleteForm(FlaskForm):
    """CSRF only."""
