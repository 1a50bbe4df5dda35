"""The rate limits of the API and of the billing pages, and who a per-user limit counts.

Each limit is read from the configuration at request time, so a test or an operator can change it on a live app.
"""
from __future__ import annotations

from flask import current_app
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_limiter.util import get_remote_address
from flask_login import current_user


def api_limit() -> str:
    """Every API route, per user or address (RATELIMIT_API)."""
    return current_app.config["RATELIMIT_API"]


def billing_limit() -> str:
    """Each route that calls Stripe for a person, API or web (RATELIMIT_BILLING)."""
    return current_app.config["RATELIMIT_BILLING"]


def login_limit() -> str:
    """Each way to log in (RATELIMIT_LOGIN)."""
    return current_app.config["RATELIMIT_LOGIN"]


def rate_limit_identity() -> str:
    """Who a per-user rate limit counts: the logged-in user, the bearer token's user, else the address."""
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    try:
        verified = verify_jwt_in_request(optional=True)
    except Exception:  # an invalid token is refused by the view itself; count it by address here
        verified = None
    if verified:
        return f"user:{get_jwt_identity()}"
    return f"addr:{get_remote_address()}"
