"""The public pricing page."""

from app.pricing.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
