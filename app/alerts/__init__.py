"""Alerts: settings gated by `email_alerts` (real-time by `realtime_alerts`), watched strategies, their signals, and
`flask alerts run|digest`."""

from app.alerts import commands  # noqa: F401  (adds `flask alerts …` to the blueprint's command group)
from app.alerts.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
