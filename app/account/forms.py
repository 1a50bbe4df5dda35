from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from app.services.accounts import MIN_PASSWORD_LENGTH


def strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class SignupForm(FlaskForm):
    email = EmailField("Email", filters=[strip], validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)])
    password = PasswordField(
        "Password",
        validators=[
            DataRequired(),
            Length(min=MIN_PASSWORD_LENGTH, max=128, message=f"Use at least {MIN_PASSWORD_LENGTH} characters."),
        ],
    )
    confirm = PasswordField(
        "Confirm password", validators=[DataRequired(), EqualTo("password", message="Passwords do not match.")]
    )


class LoginForm(FlaskForm):
    email = EmailField("Email", filters=[strip], validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=128)])
    next = HiddenField()  # where to go after logging in; rendered by hidden_tag() so the POST keeps it


class LogoutForm(FlaskForm):
    """Only the CSRF token: log-out is a POST so a link on another site cannot log people out."""
