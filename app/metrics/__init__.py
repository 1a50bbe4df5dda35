"""`/metrics` for Prometheus: open to the allow-listed networks or to the bearer token, 403 to anyone else."""
from flask import Blueprint

bp = Blueprint("metrics", __name__)

from app.metrics import routes  # noqa: E402,F401
