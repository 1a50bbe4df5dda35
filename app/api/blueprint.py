"""The API's blueprint: bearer tokens (JWT), JSON errors, no cookies, no CSRF, one rate limit over every route."""

from flask import Blueprint

from app.extensions import csrf, limiter
from app.ratelimits import api_limit, rate_limit_identity

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, not cookies: there is no ambient credential for a cross-site form to ride

# Every API route, per user (token) or per address: stored in Redis with the other limits.
limiter.limit(api_limit, key_func=rate_limit_identity)(bp)
