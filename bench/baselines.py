"""The ungated twin of an API route, shared by bench/wsgi_bench.py (gunicorn) and bench/request_overhead.py (in
process): importing it builds no app."""

from __future__ import annotations

from flask import Blueprint
from flask_jwt_extended import jwt_required

from app.api import api_limit, api_limit_key
from app.api.common import current_api_user
from app.api.schemas import StrategyList
from app.api.spec import UNAUTHORIZED, UPGRADE_REQUIRED, operation
from app.extensions import csrf, limiter
from app.services.strategies import list_strategies


def ungated_api_blueprint() -> Blueprint:
    """The API's strategies list without its entitlement gate, limited like every API route."""
    bp = Blueprint("bench_api", __name__)
    csrf.exempt(bp)
    limiter.limit(api_limit, key_func=api_limit_key)(bp)

    @bp.get("/strategies-ungated")
    @jwt_required()
    @operation(
        "benchListStrategiesUngated",
        "bench",
        {200: (StrategyList, "The strategies."), 401: UNAUTHORIZED, 403: UPGRADE_REQUIRED},
    )
    def list_strategies_ungated():
        """`GET {API_PREFIX}/strategies` minus `@requires_feature("api_access")`."""
        user = current_api_user()
        return StrategyList(strategies=list_strategies(user.id)).respond()

    return bp
