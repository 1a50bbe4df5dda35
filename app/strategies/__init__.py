"""Strategies and their backtests: the product the plans gate (`strategies_max`, `backtests_per_month`, `history_years`)."""

from app.strategies.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
