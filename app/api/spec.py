"""spectree, set up for the JSON API: `@operation(...)` validates a view's JSON body against its model (the
view's `json` parameter), checks its answer against the model of the status it returns, and describes both in
the OpenAPI document (app/api/openapi.py).

Put `@operation` under `@jwt_required()`, `@requires_feature(...)` and `@limiter.limit(...)`: a missing token is
a 401, a missing feature a 403 and a spent limit a 429 before the body is looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app, request
from pydantic import ValidationError
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType

from app.api.common import ApiError
from app.api.schemas import Error, UpgradeRequired

BEARER: dict[str, list[str]] = {"bearerAuth": []}

#: The answers many operations share: (model, description).
BAD_REQUEST = (Error, "Bad input: not a JSON object, a missing or invalid field, an unknown plan or cycle.")
UNAUTHORIZED = (Error, "Missing, forged or expired token (`authorization_required`, `invalid_token`, `token_expired`).")
TOO_MANY_REQUESTS = (Error, "Rate limited (billing: RATELIMIT_BILLING per user, default 10 per minute).")
UPGRADE_REQUIRED = (UpgradeRequired, "The plan does not include this (`upgrade_required`).")
BILLING_ERRORS = {
    401: UNAUTHORIZED,
    429: TOO_MANY_REQUESTS,
    502: (
        Error,
        "Stripe refused the request (`billing_request_failed`, or `idempotency_key_reused` when its idempotency key "
        "was used before with other parameters); nothing was charged.",
    ),
    503: (Error, "Stripe could not be reached (`billing_unavailable`); nothing was charged or written — try again."),
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


class Answers(Response):
    """The statuses an operation documents, exactly those it lists.

    spectree adds its validation-error status to every operation, also to those that take no body and so never
    answer it: an operation with a body lists its 400 itself. A 429 also documents its `Retry-After` header.
    """

    def add_model(self, code: int, model: Any, replace: bool = True, description: str | None = None) -> None:
        return None

    def generate_spec(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        responses = super().generate_spec(*args, **kwargs)
        if "429" in responses:
            responses["429"]["headers"] = RETRY_AFTER
        return responses


def refusal(error: ValidationError) -> ApiError:
    """The body's first problem (fields in the model's order) as the API's 400."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "missing":
        return ApiError(f"'{first['loc'][0]}' is required.", code="missing_field")
    if first["type"] in ("missing_field", "invalid_field"):
        return ApiError(first["msg"], code=first["type"])
    return ApiError("The request body must be a JSON object.", code="invalid_json")


def takes_json_body() -> bool:
    """Whether the route being served validates a JSON body (spectree's metadata of its view)."""
    metadata = spec.get_function_metadata(current_app.view_functions[request.endpoint or ""])
    return metadata is not None and metadata.json is not None


def refuse_bad_input(req, resp, error: Exception | None, instance, model_adapter) -> None:
    """spectree's hook before every operation: bad input becomes an ApiError, which app/errors.py answers.

    spectree reads anything that is not a JSON object (a list, a string, broken JSON, a form) as `{}` or skips
    it: such a body is refused as a whole before any field is named.
    """
    if takes_json_body() and not isinstance(req.get_json(silent=True), dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    if isinstance(error, ValidationError):
        raise refusal(error)
    if error is not None:  # anything else spectree could not read is not a JSON object of ours
        raise ApiError("The request body must be a JSON object.", code="invalid_json")


def refuse_bad_answer(req, resp, error: Exception | None, instance, model_adapter) -> None:
    """spectree's hook after every operation: an answer its own model refuses is a bug of ours, raised so that it
    is logged and answered like any unexpected error (not with spectree's report of the fields)."""
    if error is not None:
        raise error


spec = SpecTree(
    "flask",
    mode="strict",  # only the operations below: the web pages are no part of the API
    title="Smart Strategies Builder API",
    version="1.0.0",
    description="Billing and strategies for API clients. Get a token pair from `POST /auth/token`, send "
    '`Authorization: Bearer <access_token>`; every error is `{"error", "message"}` JSON.',
    security_schemes=[
        SecurityScheme(
            name="bearerAuth", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer", bearer_format="JWT")
        )
    ],
    security=BEARER,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda parent, child: child,
    validation_error_status=400,
    validation_error_model=Error,
    before=refuse_bad_input,
    after=refuse_bad_answer,
)


def operation(operation_id: str, tag: str, responses: Mapping[int, tuple[type, str]], public: bool = False):
    """Validate a view's body and answer with spectree, and document them under `operation_id`.

    The view's docstring is the operation's summary (first paragraph) and description (the rest); `public`
    operations need no token.
    """
    answers = Answers(**{f"HTTP_{status}": answer for status, answer in responses.items()})
    return spec.validate(resp=answers, tags=[tag], operation_id=operation_id, security=[] if public else BEARER)
