"""`/metrics` for Prometheus: open to the allow-listed networks or to the bearer token, 403 to anyone else."""

from app.metrics.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
