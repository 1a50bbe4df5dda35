"""`GET/POST {API_PREFIX}/strategies`: the user's strategies over the API, which needs `api_access` (Pro)."""

from __future__ import annotations

from app.api.blueprint import bp
from app.api.common import access_token_required, current_api_user
from app.api.schemas import Error, Strategy, StrategyInput, StrategyList
from app.api.spec import UNAUTHORIZED, UPGRADE_REQUIRED, operation
from app.extensions import autocommit_when_idle
from app.models import Strategy as StrategyRow
from app.services.entitlements import requires_feature
from app.services.strategies import create_strategy, list_strategies


def strategy_json(strategy: StrategyRow) -> dict:
    """One strategy as the API writes it."""
    return Strategy.model_validate(strategy).model_dump(mode="json")


@bp.get("/strategies")
@access_token_required
@requires_feature("api_access")
@operation(
    "listStrategies",
    "strategies",
    {
        200: (StrategyList, "The strategies."),
        401: UNAUTHORIZED,
        403: UPGRADE_REQUIRED,
    },
)
def list_strategies_api():
    """The user's strategies, oldest first (Pro: api_access)."""
    user = current_api_user()
    with autocommit_when_idle():  # one read: no transaction to open on the server (BEGIN) nor to end (ROLLBACK)
        strategies = list_strategies(user.id)
    return StrategyList(strategies=strategies).respond()


@bp.post("/strategies")
@access_token_required
@requires_feature("api_access")
@operation(
    "createStrategy",
    "strategies",
    {
        201: (Strategy, "The new strategy."),
        400: (
            Error,
            "Bad input: not a JSON object, a missing or invalid field (`invalid_json`, `missing_field`, "
            "`invalid_field`), or rules that cannot be read (`invalid_rules`, the message quoting them).",
        ),
        401: UNAUTHORIZED,
        403: UPGRADE_REQUIRED,
    },
)
def create_strategy_api(json: StrategyInput):
    """Create a strategy within the plan's `strategies_max`.

    A refusal is a DomainError: 400 `invalid_rules`, 403 `upgrade_required` past the limit.
    """
    user = current_api_user()
    strategy = create_strategy(user.id, json.name, json.description or "", json.rules or "")
    return Strategy.model_validate(strategy).respond(201)
