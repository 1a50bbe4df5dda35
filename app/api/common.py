"""What every API route needs: the current user from the bearer token, and JSON errors."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from flask_jwt_extended import get_jwt_identity

from app.extensions import db
from app.models import User
from app.services import DomainError


class ApiError(DomainError):
    """Bad API input: 400 `{"error": code, "message": text}` unless another status is given."""

    code = "invalid_request"


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
    """The API's error body, for the answers that are built rather than raised (the JWT loaders)."""
    return jsonify(error=code, message=message), status
