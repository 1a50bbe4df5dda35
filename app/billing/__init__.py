"""Billing: Checkout, Portal, plan changes (wired by the billing-flows issue)."""
from flask import Blueprint

bp = Blueprint("billing", __name__)

from app.billing import routes  # noqa: E402,F401
