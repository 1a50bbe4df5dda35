"""The JSON API under API_PREFIX: bearer tokens (JWT), JSON errors, no cookies, no CSRF.

`bp` lives in app/api/blueprint.py; the modules imported here add their routes to it, so registering `bp`
registers them all. Request and response bodies are the pydantic models of app/api/schemas.py.
"""

from app.api import auth, billing, openapi, strategies  # noqa: F401  (their routes)
from app.api.blueprint import bp
from app.ratelimits import api_limit
from app.ratelimits import rate_limit_identity as api_limit_key

__all__ = ["api_limit", "api_limit_key", "bp"]
