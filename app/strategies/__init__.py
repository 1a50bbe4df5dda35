"""Strategies and their backtests: the product the plans gate (`strategies_max`, `backtests_per_month`, `history_years`)."""
from flask import Blueprint

bp = Blueprint("strategies", __name__)

from app.strategies import routes  # noqa: E402,F401
