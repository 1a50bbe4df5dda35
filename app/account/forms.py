from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from app.services.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH


def strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def new_password_field(label: str = "Password") -> PasswordField:
    return PasswordField(
        label,
        validators=[
            DataRequired(),
            Length(min=MIN_PASSWORD_LENGTH, message=f"Use at least {MIN_PASSWORD_LENGTH} characters."),
            Length(max=MAX_PASSWORD_LENGTH, message=f"Use at most {MAX_PASSWORD_LENGTH} characters."),
        ],
    )


def confirm_field(label: str = "Confirm password") -> PasswordField:
    return PasswordField(label, validators=[DataRequired(), EqualTo("password", message="Passwords do not match.")])


def email_field(label: str = "Email") -> EmailField:
    return EmailField(
        label, filters=[strip], validators=[DataRequired(), Email(check_deliverability=False), Length(max=320)]
    )


class SignupForm(FlaskForm):
    email = email_field()
    password = new_password_field()
    confirm = confirm_field()


class LoginForm(FlaskForm):
    email = email_field()
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    next = HiddenField()  # where to go after logging in; rendered by hidden_tag() so the POST keeps it


class LogoutForm(FlaskForm):
    """Only the CSRF token: log-out is a POST so a link on another site cannot log people out."""


class ForgotPasswordForm(FlaskForm):
    email = email_field()


class ResetPasswordForm(FlaskForm):
    password = new_password_field("New password")
    confirm = confirm_field("Confirm new password")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    password = new_password_field("New password")
    confirm = confirm_field("Confirm new password")


class ChangeEmailForm(FlaskForm):
    """A new login email, confirmed by the link mailed to it; the current password proves it is the owner asking."""

    # Named apart from the password form's fields: both forms are on the account page, and ids must be unique.
    new_email = email_field("New email")
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
