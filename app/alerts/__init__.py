"""Alert settings: gated by `email_alerts`, with a real-time option gated by `realtime_alerts`."""
from flask import Blueprint

bp = Blueprint("alerts", __name__)

from app.alerts import routes  # noqa: E402,F401
