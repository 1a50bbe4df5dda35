"""`/healthz` for load balancers and uptime checks."""
from flask import Blueprint

bp = Blueprint("health", __name__)

from app.health import routes  # noqa: E402,F401
