"""The public pricing page."""
from flask import Blueprint

bp = Blueprint("pricing", __name__)

from app.pricing import routes  # noqa: E402,F401
