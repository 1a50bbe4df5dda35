"""Stripe's webhook endpoint, on a blueprint of its own: no CSRF (signed instead), no user rate limits."""

from app.webhooks.routes import bp  # noqa: F401  (re-exported: the blueprint lives beside its routes)
