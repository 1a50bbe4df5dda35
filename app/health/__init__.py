"""`/healthz` for load balancers and uptime checks."""

from app.health.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
