"""Stripe-shaped API errors.

Raised anywhere in request handling and turned into
``{"error": {"type", "code", "message", "param", ...}}`` with Stripe's status
code by the server, so stripe-python raises the same exception class
(InvalidRequestError, CardError, AuthenticationError, ...) it would against
Stripe.
"""

from __future__ import annotations


class StripeError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        **extra,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra

    def body(self) -> dict:
        err = {"code": self.code, "message": self.message, "param": self.param, "type": self.type}
        if self.code:
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        err.update(self.extra)
        return {"error": err}


def masked_key(key: str) -> str:
    """A key as Stripe's 401 shows it: its first 8 and last 4 characters, a ``*`` for each one between."""
    return key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else key


def missing_param(param: str) -> StripeError:
    return StripeError(f"Missing required param: {param}.", code="parameter_missing", param=param)


def invalid(param: str, message: str) -> StripeError:
    return StripeError(
        message,
        code="parameter_invalid_empty" if message.startswith("You passed an empty") else "parameter_invalid",
        param=param,
    )


def unknown_param(param: str) -> StripeError:
    return StripeError(f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def no_such(kind: str, obj_id: str, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(f"No such {kind}: '{obj_id}'", status=status, code="resource_missing", param=param)


def card_declined(
    message: str = "Your card was declined.",
    decline_code: str = "generic_decline",
    code: str = "card_declined",
    param: str | None = None,
) -> StripeError:
    return StripeError(message, status=402, type="card_error", code=code, param=param, decline_code=decline_code)
