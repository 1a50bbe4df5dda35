"""Stripe's webhook endpoint, on a blueprint of its own: no CSRF (signed instead), no user rate limits."""
from flask import Blueprint

from app.extensions import csrf, limiter

bp = Blueprint("webhooks", __name__)
csrf.exempt(bp)
limiter.exempt(bp)

from app.webhooks import routes  # noqa: E402,F401
