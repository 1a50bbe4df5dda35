"""The only module that imports `stripe`.

One `StripeClient` per app, kept on `app.extensions["stripe_gateway"]`: real Stripe when `STRIPE_SECRET_KEY` is
set (and no `STRIPE_API_BASE`), the bundled emulator otherwise (development and tests). Every call goes through
`StripeGateway.call`, which times it, counts it and turns Stripe's errors into domain errors a person understands,
logged without secrets.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import stripe
from flask import Flask, current_app

from app.logging import get_logger
from app.services import DomainError
from app.services.metrics import STRIPE_API_ERRORS, STRIPE_API_REQUEST_SECONDS

T = TypeVar("T")
log = get_logger("app.stripe")

EMULATOR_API_BASE = "http://127.0.0.1:12111"
EMULATOR_API_KEY = "sk_test_emulator"
UNAVAILABLE_MESSAGE = "Billing is temporarily unavailable — nothing was charged, please try again."


class BillingUnavailable(DomainError):
    """Stripe could not be reached or failed on its side; nothing was changed."""

    code = "billing_unavailable"
    status = 503

    def __init__(self, message: str = UNAVAILABLE_MESSAGE):
        super().__init__(message)


class PaymentDeclined(DomainError):
    code = "card_declined"
    status = 402


class StripeRequestFailed(DomainError):
    """Stripe refused a request (a bug or a stale id on our side, not the person's fault)."""

    code = "billing_request_failed"
    status = 502


class StripeObjectMissing(DomainError):
    code = "not_found"
    status = 404


# Stripe errors and whether they are worth retrying at the caller's level; the client itself already retried
# connection errors and 5xx `max_network_retries` times.
def translate(error: stripe.StripeError) -> DomainError:
    """A Stripe error as a domain error with a message a person understands."""
    if isinstance(error, stripe.CardError):
        return PaymentDeclined("Your card was declined." if error.code == "card_declined" else
                               f"Your card could not be charged: {error.user_message or 'please try another card.'}")
    if isinstance(error, (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError,
                          stripe.AuthenticationError, stripe.PermissionError)):
        return BillingUnavailable()
    if isinstance(error, stripe.InvalidRequestError) and error.http_status == 404:
        return StripeObjectMissing("We could not find that billing record.")
    if isinstance(error, stripe.IdempotencyError):
        return BillingUnavailable("This request is already being processed — please wait a moment and try again.")
    return StripeRequestFailed("Billing could not complete this request. Nothing was charged.")


class StripeGateway:
    """A StripeClient with error translation, timing and a call counter."""

    def __init__(self, api_key: str, api_base: str | None, max_network_retries: int = 2, timeout: float = 20):
        self.api_base = api_base
        self.is_emulator = api_base is not None
        self.client = stripe.StripeClient(
            api_key,
            stripe_version=stripe.api_version,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        self._lock = threading.Lock()
        self.calls = 0  # every API request made; the webhook benchmark reports calls per event

    @property
    def v1(self):
        return self.client.v1

    def call(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Stripe request; Stripe errors become domain errors, logged without secrets."""
        with self._lock:
            self.calls += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            log.warning("stripe_api_error", operation=operation, error_type=type(error).__name__, code=error.code,
                        http_status=error.http_status, stripe_request_id=error.request_id)
            observe_error(operation, error)
            raise translate(error) from None
        finally:
            observe_duration(operation, time.perf_counter() - started)

    @staticmethod
    def verify_webhook(payload: bytes, signature: str, secret: str, tolerance: int = 300):
        """Verify a webhook signature for one secret; raises ValueError or SignatureInvalid."""
        return stripe.Webhook.construct_event(payload, signature, secret, tolerance=tolerance)


def observe_duration(operation: str, seconds: float) -> None:
    STRIPE_API_REQUEST_SECONDS.observe(seconds)


def observe_error(operation: str, error: Exception) -> None:
    STRIPE_API_ERRORS.inc()


SignatureInvalid = stripe.SignatureVerificationError
StripeObject = stripe.StripeObject


def init_app(app: Flask) -> None:
    """Build the app's gateway: real Stripe with a secret key, otherwise the emulator (never in production)."""
    key = app.config.get("STRIPE_SECRET_KEY")
    base = app.config.get("STRIPE_API_BASE")
    if not key:
        key, base = EMULATOR_API_KEY, base or EMULATOR_API_BASE
    app.extensions["stripe_gateway"] = StripeGateway(
        key, base, max_network_retries=app.config.get("STRIPE_MAX_NETWORK_RETRIES", 2),
        timeout=app.config.get("STRIPE_TIMEOUT_SECONDS", 20),
    )


def gateway() -> StripeGateway:
    return current_app.extensions["stripe_gateway"]


def to_dict(obj: Any) -> Any:
    """A StripeObject (or list of them) as plain dicts and lists, for storing and templates."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    return obj


def id_of(value: Any) -> Any:
    """The id of a Stripe reference that may be expanded: the object's `id`, or the value itself (an id or None)."""
    return value.get("id") if isinstance(value, dict) else value


def from_timestamp(value: int | None) -> datetime | None:
    """A Stripe timestamp (unix seconds) as an aware UTC datetime; None for none (or 0)."""
    return datetime.fromtimestamp(value, tz=timezone.utc) if value else None
