"""`POST /auth/token` and `POST /auth/refresh`: JWT bearer tokens for API clients."""
from __future__ import annotations

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, jwt_required

from app.api.blueprint import bp
from app.api.common import ApiError, current_api_user, error_response, user_for_identity
from app.api.schemas import Error, Me, TokenPair, TokenRequest
from app.api.spec import BAD_REQUEST, TOO_MANY_REQUESTS, UNAUTHORIZED, operation
from app.extensions import jwt, limiter
from app.ratelimits import login_limit
from app.services.accounts import authenticate


def token_pair(user_id: int) -> TokenPair:
    """A fresh access token and refresh token for the user."""
    identity = str(user_id)
    return TokenPair(
        access_token=create_access_token(identity=identity),
        refresh_token=create_refresh_token(identity=identity),
        token_type="bearer",
        expires_in=int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    )


@bp.post("/auth/token")
@limiter.limit(login_limit)
@operation("issueToken", "auth", {
    200: (TokenPair, "The tokens."), 400: BAD_REQUEST,
    401: (Error, "Email or password is incorrect (`invalid_credentials`)."), 429: TOO_MANY_REQUESTS,
}, public=True)
def issue_token(json: TokenRequest):
    """Exchange email and password for a token pair."""
    user = authenticate(json.email, json.password)
    if user is None:
        raise ApiError("Email or password is incorrect.", code="invalid_credentials", status=401)
    return token_pair(user.id).respond()


@bp.post("/auth/refresh")
@jwt_required(refresh=True)
@operation("refreshToken", "auth", {200: (TokenPair, "The new tokens."), 401: UNAUTHORIZED})
def refresh_token():
    """A new token pair; send the *refresh* token as bearer."""
    user = current_api_user()
    return token_pair(user.id).respond()


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
@operation("showMe", "auth", {200: (Me, "The user."), 401: UNAUTHORIZED})
def show_me():
    """Who the token belongs to."""
    return Me.model_validate(current_api_user()).respond()
