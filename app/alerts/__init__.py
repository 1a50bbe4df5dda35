"""Alert settings: gated by `email_alerts`, with a real-time option gated by `realtime_alerts`."""

from app.alerts.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
