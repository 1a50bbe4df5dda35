"""`GET/POST {API_PREFIX}/strategies`: the user's strategies over the API, which needs `api_access` (Pro)."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from app.api.blueprint import bp
from app.api.common import access_token_required, current_api_user
from app.api.schemas import Error, Strategy, StrategyInput, StrategyList
from app.api.spec import UNAUTHORIZED, UPGRADE_REQUIRED, operation
from app.extensions import DriverRead, autocommit_when_idle
from app.models import Strategy as StrategyRow
from app.services.entitlements import requires_feature
from app.services.strategies import create_strategy

#: The listed strategies' columns, named as the answer's fields, and their statement, compiled once per process:
#: `list_strategies`'s rows and order (oldest first), without the ORM objects the answer never needed.
_LISTED = (StrategyRow.id, StrategyRow.name, StrategyRow.description, StrategyRow.rules, StrategyRow.created_at)
_LISTED_KEYS = tuple(column.key for column in _LISTED)
_LIST_READ = DriverRead(
    select(*_LISTED).where(StrategyRow.user_id == bindparam("user_id")).order_by(StrategyRow.created_at, StrategyRow.id)
)


def strategy_list(user_id: int) -> StrategyList:
    """The user's strategies as the API lists them, oldest first, read as columns on the driver's cursor
    (`DriverRead`) in autocommit: one round trip, no transaction opened on the server (BEGIN) nor ended (ROLLBACK).

    Loading them as ORM rows (`list_strategies`) to copy their values into the answer cost 2.1 ms of CPU for the
    bench's five (this, 0.9 ms): the ORM's statement building, execution and loading of each row, and a transaction
    begun and rolled back, for values the answer validates anyway."""
    with autocommit_when_idle() as connection:
        rows = _LIST_READ.rows(connection, {"user_id": user_id})
    return StrategyList(strategies=[Strategy.model_validate(dict(zip(_LISTED_KEYS, row, strict=True))) for row in rows])


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
    return strategy_list(current_api_user().id).respond()


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
