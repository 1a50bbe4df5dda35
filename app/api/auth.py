"""`POST /auth/token` and `POST /auth/refresh`: JWT bearer tokens for API clients."""
from __future__ import annotations

from flask import current_app, jsonify
from flask_jwt_extended import create_access_token, create_refresh_token, jwt_required

from app.api import bp
from app.api.common import ApiError, current_api_user, error_response, json_body, string_field, user_for_identity
from app.extensions import jwt, limiter
from app.services.accounts import authenticate


def token_pair(user_id: int) -> dict:
    identity = str(user_id)
    return {
        "access_token": create_access_token(identity=identity),
        "refresh_token": create_refresh_token(identity=identity),
        "token_type": "bearer",
        "expires_in": int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }


def login_limit() -> str:
    return current_app.config["RATELIMIT_LOGIN"]


@bp.post("/auth/token")
@limiter.limit(login_limit)
def issue_token():
    """Exchange email and password for an access token and a refresh token."""
    data = json_body()
    email = string_field(data, "email", max_length=320)
    password = string_field(data, "password", max_length=128, strip=False)
    user = authenticate(email, password)
    if user is None:
        raise ApiError("Email or password is incorrect.", code="invalid_credentials", status=401)
    return jsonify(token_pair(user.id))


@bp.post("/auth/refresh")
@jwt_required(refresh=True)
def refresh_token():
    """A new access token (and refresh token) from a valid refresh token."""
    user = current_api_user()
    return jsonify(token_pair(user.id))


@jwt.unauthorized_loader
def missing_token(reason: str):
    return error_response(401, "authorization_required", "Send an access token: 'Authorization: Bearer <token>'.")


@jwt.invalid_token_loader
def invalid_token(reason: str):
    return error_response(401, "invalid_token", "The access token is invalid.")


@jwt.expired_token_loader
def expired_token(header, payload):
    return error_response(401, "token_expired", "The access token has expired; refresh it or log in again.")


@jwt.revoked_token_loader
def revoked_token(header, payload):
    return error_response(401, "invalid_token", "The token has been revoked.")


@jwt.needs_fresh_token_loader
def stale_token(header, payload):
    return error_response(401, "fresh_token_required", "Log in again to do this.")


@jwt.user_lookup_loader
def load_token_user(header, payload):
    """The token's user, looked up as the token is verified: a deleted user or a subject naming nobody is a 401
    before any entitlement gate runs (a gate would otherwise answer 403 "Free plan", or redirect to /login)."""
    return user_for_identity(payload.get(current_app.config["JWT_IDENTITY_CLAIM"]))


@jwt.user_lookup_error_loader
def unknown_user(header, payload):
    return error_response(401, "invalid_token", "The token's user no longer exists.")




@bp.get("/me")
@jwt_required()
def show_me():
    """Who the token belongs to."""
    user = current_api_user()
    return jsonify(id=user.id, email=user.email)
