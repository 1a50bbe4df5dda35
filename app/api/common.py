"""What every API route needs: the current user from the bearer token, JSON input, JSON errors."""
from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask_jwt_extended import get_jwt_identity

from app.extensions import db
from app.models import User
from app.services import DomainError


class ApiError(DomainError):
    """Bad API input: 400 `{"error": code, "message": text}` unless another status is given."""

    code = "invalid_request"


def json_body() -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 naming the problem."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError("The request body must be a JSON object.", code="invalid_json")
    return data


def string_field(data: dict[str, Any], name: str, max_length: int = 255, required: bool = True,
                 strip: bool = True) -> str | None:
    """A string field of the body; missing, empty or not a string is a 400 naming the field.

    Stripped unless `strip=False` (a password is compared exactly as the sign-up form stored it).
    """
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ApiError(f"'{name}' is required.", code="missing_field")
        return None
    if not isinstance(value, str):
        raise ApiError(f"'{name}' must be a string.", code="invalid_field")
    if "\x00" in value:  # PostgreSQL text cannot hold it: refuse here, not as a 500 from the query
        raise ApiError(f"'{name}' must not contain NUL characters.", code="invalid_field")
    if len(value) > max_length:
        raise ApiError(f"'{name}' must be at most {max_length} characters.", code="invalid_field")
    return value.strip() if strip else value


#: users.id is a PostgreSQL integer: a larger subject would fail in the query (a 500), not find nobody.
MAX_USER_ID = 2**31 - 1


def user_for_identity(identity: Any) -> User | None:
    """The user a token's subject names, or None for a subject that names nobody (never an error)."""
    if not (isinstance(identity, str) and identity.isascii() and identity.isdigit()):
        return None
    if not 0 < int(identity) <= MAX_USER_ID:
        return None
    return db.session.get(User, int(identity))


def current_api_user() -> User:
    """The user the access token names (call inside a `@jwt_required()` view)."""
    user = user_for_identity(get_jwt_identity())
    if user is None:
        raise ApiError("The token's user no longer exists.", code="invalid_token", status=401)
    return user


def error_response(status: int, code: str, message: str):
    return jsonify(error=code, message=message), status


def rate_limit_identity() -> str:
    """Who a per-user rate limit counts: the logged-in user, the bearer token's user, else the address."""
    from flask_jwt_extended import verify_jwt_in_request
    from flask_login import current_user
    from flask_limiter.util import get_remote_address

    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    try:
        verified = verify_jwt_in_request(optional=True)
    except Exception:  # an invalid token is refused by the view itself; count it by address here
        verified = None
    if verified:
        return f"user:{get_jwt_identity()}"
    return f"addr:{get_remote_address()}"
