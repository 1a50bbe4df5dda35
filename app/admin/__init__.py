"""The admin dashboard `/admin`: revenue, churn, conversions, failed payments, webhooks, audit, user lookup.

Only users with `is_admin` see it; to everyone else (anonymous included) it does not exist (404).
"""
from flask import Blueprint

bp = Blueprint("admin", __name__)

from app.admin import routes  # noqa: E402,F401
