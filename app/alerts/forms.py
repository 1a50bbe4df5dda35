from flask_wtf import FlaskForm
from wtforms import BooleanField


class AlertSettingsForm(FlaskForm):
    email_enabled = BooleanField("Email me when a strategy signals a trade")
    realtime_enabled = BooleanField("Real-time: alert within seconds of the signal, not in the end-of-day digest")
