"""What every API route needs: the current user from the bearer token, and JSON errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, jsonify
from flask_jwt_extended import get_current_user, verify_jwt_in_request

from app.extensions import db
from app.models import User
from app.services import DomainError
from app.services.entitlements import access_token_verified


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


def access_token_required(view: Callable) -> Callable:
    """`@jwt_required()` that takes the access token as verified when this request has verified it already.

    Every API route's per-user rate limit verifies the token first, to know whose limit it counts
    (`rate_limit_identity`): signature, expiry, revocation and user, the same checks as here. Verifying it again
    decoded it a second time (PyJWT's signature and base64 work: about a quarter of an API request's CPU) for the
    same answer. A request not verified yet (the limiter off, no token, a refresh token, a bad one) is verified here
    as `@jwt_required()` does, with its 401s."""

    @wraps(view)
    def verified(*args, **kwargs):
        if not access_token_verified():
            verify_jwt_in_request()
        return current_app.ensure_sync(view)(*args, **kwargs)

    return verified


def current_api_user() -> User:
    """The user the access token names, as its verification loaded it (call inside an `@access_token_required`
    view): the token check read it with the token's family, and a second look-up would only find it again."""
    user = get_current_user()
    if user is None:
        raise ApiError("The token's user no longer exists.", code="invalid_token", status=401)
    return user


def error_response(status: int, code: str, message: str):
    """The API's error body, for the answers that are built rather than raised (the JWT loaders)."""
    return jsonify(error=code, message=message), status
