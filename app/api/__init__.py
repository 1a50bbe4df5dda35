"""The JSON API under API_PREFIX: bearer tokens (JWT), JSON errors, no cookies, no CSRF.

Modules add routes to `bp`; import them at the bottom so registering `bp` registers them all.
"""
from flask import Blueprint, current_app

from app.extensions import csrf, limiter

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, not cookies: there is no ambient credential for a cross-site form to ride


def api_limit() -> str:
    return current_app.config["RATELIMIT_API"]


def api_limit_key() -> str:
    from app.api.common import rate_limit_identity

    return rate_limit_identity()


# Every API route, per user (token) or per address: stored in Redis with the other limits.
limiter.limit(api_limit, key_func=api_limit_key)(bp)

from app.api import auth, billing, openapi, strategies  # noqa: E402,F401
