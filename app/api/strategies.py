"""`GET/POST {API_PREFIX}/strategies`: the user's strategies over the API, which needs `api_access` (Pro)."""
from __future__ import annotations

from flask import jsonify
from flask_jwt_extended import jwt_required

from app.api import bp
from app.api.common import current_api_user, json_body, string_field
from app.models import Strategy
from app.services.entitlements import requires_feature
from app.services.strategies import NAME_MAX, TEXT_MAX, create_strategy, list_strategies


def strategy_json(strategy: Strategy) -> dict:
    return {
        "id": strategy.id,
        "name": strategy.name,
        "description": strategy.description,
        "rules": strategy.rules,
        "created_at": strategy.created_at.isoformat(),
    }


@bp.get("/strategies")
@jwt_required()
@requires_feature("api_access")
def list_strategies_api():
    """The token's user's strategies, oldest first."""
    user = current_api_user()
    return jsonify(strategies=[strategy_json(s) for s in list_strategies(user.id)])


@bp.post("/strategies")
@jwt_required()
@requires_feature("api_access")
def create_strategy_api():
    """Create a strategy from `name`, `description`, `rules`; 400 invalid_rules, 403 upgrade_required past the limit."""
    user = current_api_user()
    data = json_body()
    name = string_field(data, "name", max_length=NAME_MAX)
    description = string_field(data, "description", max_length=TEXT_MAX, required=False) or ""
    rules = string_field(data, "rules", max_length=TEXT_MAX, required=False) or ""
    strategy = create_strategy(user.id, name, description, rules)  # a refusal is a DomainError: 400/403 JSON
    return jsonify(strategy_json(strategy)), 201
