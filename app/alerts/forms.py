from flask_wtf import FlaskForm
from wtforms import BooleanField


class AlertSettingsForm(FlaskForm):
    email_enabled = BooleanField("Email me when a strategy signals a trade")
    realtime_enabled = BooleanField(
        "Real-time: one mail per signal as soon as the evaluation sees it, not the daily digest"
    )


class WatchForm(FlaskForm):
    """CSRF only: the watch and stop-watching buttons."""
