"""The JSON API under API_PREFIX: bearer tokens (JWT), JSON errors, no cookies, no CSRF.

Modules add routes to `bp`; import them at the bottom so registering `bp` registers them all.
"""
from flask import Blueprint

from app.extensions import csrf

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # bearer tokens, not cookies: there is no ambient credential for a cross-site form to ride

from app.api import auth, billing, openapi, strategies  # noqa: E402,F401
