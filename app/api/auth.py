"""`POST /auth/token` and `POST /auth/refresh`: JWT bearer tokens for API clients.

Each `/auth/token` starts a token family: a server-side `AuthSession` row whose id every token of the family
carries (`sid`). A token is accepted only while its family is live, so "log out everywhere" and a password change
end it at once. Refresh tokens rotate: each works once, and presenting a spent one revokes the whole family
(the OAuth 2.0 Security BCP's reuse detection), ending the access tokens of whoever holds the copy too.
"""

from __future__ import annotations

from flask import current_app, has_request_context, request
from flask_jwt_extended import create_access_token, create_refresh_token, get_jwt, jwt_required
from flask_jwt_extended.exceptions import WrongTokenError

from app.api.blueprint import bp
from app.api.common import ApiError, access_token_required, current_api_user, error_response, user_for_identity
from app.api.schemas import Error, Me, TokenPair, TokenRequest
from app.api.spec import BAD_REQUEST, TOO_MANY_REQUESTS, UNAUTHORIZED, operation
from app.extensions import db, jwt, limiter
from app.logging import bind_user_id
from app.ratelimits import LOGIN_SCOPE, login_limit
from app.services import sessions, viewer
from app.services.accounts import authenticate

#: The claim naming the token's family (its `AuthSession` row).
FAMILY_CLAIM = "sid"
#: The one endpoint that takes a refresh token; every other takes an access token.
REFRESH_ENDPOINT = "api.refresh_token"
#: What /auth/refresh can answer 401 (the codes of every other operation's 401, `spec.UNAUTHORIZED`).
REFRESH_UNAUTHORIZED = (
    Error,
    "Missing, forged, expired, used or revoked refresh token, or an access token sent instead "
    "(`authorization_required`, `invalid_token`, `token_expired`).",
)


def token_pair(user_id: int, family_id: str, refresh_jti: str) -> TokenPair:
    """An access token and the family's one usable refresh token (id `refresh_jti`)."""
    identity = str(user_id)
    return TokenPair(
        access_token=create_access_token(identity=identity, additional_claims={FAMILY_CLAIM: family_id}),
        refresh_token=create_refresh_token(
            identity=identity, additional_claims={FAMILY_CLAIM: family_id, "jti": refresh_jti}
        ),
        token_type="bearer",
        expires_in=int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    )


@bp.post("/auth/token")
@limiter.shared_limit(login_limit, scope=LOGIN_SCOPE)
@operation(
    "issueToken",
    "auth",
    {
        200: (TokenPair, "The tokens."),
        400: BAD_REQUEST,
        401: (Error, "Email or password is incorrect (`invalid_credentials`)."),
        429: TOO_MANY_REQUESTS,
    },
    public=True,
)
def issue_token(json: TokenRequest):
    """Exchange email and password for a token pair (a new token family)."""
    user = authenticate(json.email, json.password)
    if user is None:
        raise ApiError("Email or password is incorrect.", code="invalid_credentials", status=401)
    refresh_jti = sessions.new_token_id()
    family = sessions.start(user.id, sessions.API, current_app.config["JWT_REFRESH_TOKEN_EXPIRES"], refresh_jti)
    db.session.commit()
    return token_pair(user.id, family.id, refresh_jti).respond()


@bp.post("/auth/refresh")
@jwt_required(refresh=True)
@operation("refreshToken", "auth", {200: (TokenPair, "The new tokens."), 401: REFRESH_UNAUTHORIZED})
def refresh_token():
    """A new token pair; send the *refresh* token as bearer. Each refresh token works once: using one again
    revokes its family (every token from the same log-in)."""
    user = current_api_user()
    claims = get_jwt()
    family_id = claims.get(FAMILY_CLAIM)
    next_jti = sessions.rotate_refresh(
        family_id, user.id, claims.get("jti"), current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    )
    if next_jti is None:
        raise ApiError("The refresh token was already used or revoked: log in again.", code="invalid_token", status=401)
    db.session.commit()
    return token_pair(user.id, family_id, next_jti).respond()


#: Where a request keeps the token it verified and its user (`token_revoked`), None for a revoked token.
_TOKEN_USER_MEMO = "ssb.token_user"


def _token_key(payload: dict) -> tuple:
    """What names a token's verdict: its id, subject and family."""
    return payload.get("jti"), payload.get(current_app.config["JWT_IDENTITY_CLAIM"]), payload.get(FAMILY_CLAIM)


@jwt.token_in_blocklist_loader
def token_revoked(header, payload) -> bool:
    """A token is revoked unless its family is live (not logged out everywhere, no password change, no reuse) and
    its user exists.

    One statement reads the family and the user (`viewer.token_user`, as the web log-in check reads), which is kept
    with the verdict: the token's user lookup (`load_token_user`) takes the user from there instead of a query of
    its own. Asked once per request and token: the per-user rate limit's key verifies the token and the view's
    `@access_token_required` takes that verification; a second verification in the same request (a view that
    verifies anew) asks the request's memo instead of the database again."""
    key = _token_key(payload)
    environ = request.environ if has_request_context() else {}  # the request's own: never shared by two requests
    memo = environ.get(_TOKEN_USER_MEMO)
    if memo is not None and memo[0] == key:
        return memo[1] is None
    user_id = key[1]
    if not (isinstance(user_id, str) and user_id.isascii() and user_id.isdigit()):
        return True
    user = viewer.token_user(key[2], int(user_id))
    environ[_TOKEN_USER_MEMO] = (key, user)
    if user is not None:
        bind_user_id(user.id)  # this request's later log lines, its request line included, name the token's user
    return user is None


def refresh_expected() -> bool:
    """Whether this request's endpoint takes a refresh token (the answers about a bad token name the kind it
    takes)."""
    return has_request_context() and request.endpoint == REFRESH_ENDPOINT


@jwt.unauthorized_loader
def missing_token(reason: str):
    kind = "a refresh" if refresh_expected() else "an access"
    return error_response(401, "authorization_required", f"Send {kind} token: 'Authorization: Bearer <token>'.")


@jwt.invalid_token_loader
def invalid_token(reason: str):
    kind = "refresh" if refresh_expected() else "access"
    return error_response(401, "invalid_token", f"The {kind} token is invalid.")


@bp.errorhandler(WrongTokenError)
def wrong_kind_of_token(error: WrongTokenError):
    """A valid token of the other kind (flask-jwt-extended hands it to the invalid-token loader, whose "The access
    token is invalid." told a client that sent its access token to /auth/refresh nothing it could act on)."""
    if refresh_expected():
        return error_response(401, "invalid_token", "This endpoint takes a refresh token, not an access token.")
    return error_response(401, "invalid_token", "This endpoint takes an access token, not a refresh token.")


@jwt.expired_token_loader
def expired_token(header, payload):
    if payload.get("type") == "refresh":
        return error_response(401, "token_expired", "The refresh token has expired; log in again.")
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
    memo = request.environ.get(_TOKEN_USER_MEMO) if has_request_context() else None
    if memo is not None and memo[0] == _token_key(payload) and memo[1] is not None:
        return memo[1]  # read with the family by the revocation check, just before
    return user_for_identity(payload.get(current_app.config["JWT_IDENTITY_CLAIM"]))


@jwt.user_lookup_error_loader
def unknown_user(header, payload):
    return error_response(401, "invalid_token", "The token's user no longer exists.")


@bp.get("/me")
@access_token_required
@operation("showMe", "auth", {200: (Me, "The user."), 401: UNAUTHORIZED})
def show_me():
    """Who the token belongs to."""
    return Me.model_validate(current_api_user()).respond()
