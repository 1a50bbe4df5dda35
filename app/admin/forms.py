from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length


class ActionForm(FlaskForm):
    """Replay an event, sync a customer: only the CSRF token."""


class LookupForm(FlaskForm):
    """The user lookup (a GET form: nothing changes, so no CSRF token)."""

    class Meta:
        csrf = False

    email = StringField("Email", validators=[DataRequired(), Length(max=320)])
