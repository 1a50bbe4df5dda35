"""The only module that imports `stripe`.

One `StripeClient` per app, kept on `app.extensions["stripe_gateway"]`: real Stripe when `STRIPE_SECRET_KEY` is
set (and no `STRIPE_API_BASE`), the bundled emulator otherwise (development and tests). Every call goes through
`StripeGateway.call`, which times it, counts it and turns Stripe's errors into domain errors a person understands,
logged without secrets.

The rest of the app asks Stripe only through the named operations at the end of this file
(`retrieve_subscription`, `create_checkout_session`, …): they are the whole list of what the app asks Stripe,
with the parameters each sends, and they answer plain dicts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe
from flask import Flask, current_app

from app.logging import get_logger
from app.services import DomainError
from app.services.metrics import STRIPE_API_ERRORS, STRIPE_API_REQUEST_SECONDS

T = TypeVar("T")
log = get_logger("app.stripe")

#: The API version every request asks for, and the only shape of event the webhook handlers read.
API_VERSION: str = stripe.api_version
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
        return PaymentDeclined(
            "Your card was declined."
            if error.code == "card_declined"
            else f"Your card could not be charged: {error.user_message or 'please try another card.'}"
        )
    if isinstance(
        error,
        (
            stripe.APIConnectionError,
            stripe.APIError,
            stripe.RateLimitError,
            stripe.AuthenticationError,
            stripe.PermissionError,
        ),
    ):
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
            stripe_version=API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        self._lock = threading.Lock()
        self.calls = 0  # every API request made; the webhook benchmark reports calls per event

    def call(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one Stripe request; Stripe errors become domain errors, logged without secrets."""
        with self._lock:
            self.calls += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            log.warning(
                "stripe_api_error",
                operation=operation,
                error_type=type(error).__name__,
                code=error.code,
                http_status=error.http_status,
                stripe_request_id=error.request_id,
            )
            observe_error(operation, error)
            raise translate(error) from None
        finally:
            observe_duration(operation, time.perf_counter() - started)

    @staticmethod
    def verify_webhook(payload: bytes, signature: str, secret: str, tolerance: int = 300) -> None:
        """Check a webhook signature for one secret, without parsing the body (the caller parses it once).

        Raises SignatureInvalid, or ValueError for a body that is not UTF-8.
        """
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=tolerance)


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
        key,
        base,
        max_network_retries=app.config.get("STRIPE_MAX_NETWORK_RETRIES", 2),
        timeout=app.config.get("STRIPE_TIMEOUT_SECONDS", 20),
    )


def gateway() -> StripeGateway:
    """The app's gateway (built by `init_app`)."""
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
    return datetime.fromtimestamp(value, tz=UTC) if value else None


# ---------------------------------------------------------------------------------------------------------------
# What the app asks Stripe: every request is one of these operations, each a plain dict (or list of them) back.
# ---------------------------------------------------------------------------------------------------------------


def stripe_request(operation: str, *args: Any, **kwargs: Any) -> Any:
    """One request by its path under `StripeClient.v1` ("subscriptions.retrieve"), through `StripeGateway.call`."""
    stripe_gateway = gateway()
    method: Any = stripe_gateway.client.v1
    for name in operation.split("."):
        method = getattr(method, name)
    return stripe_gateway.call(operation, method, *args, **kwargs)


def expanded(expand: list[str] | None) -> dict[str, Any]:
    """The `params` of a retrieve that expands `expand` (none at all when nothing is expanded)."""
    return {"params": {"expand": expand}} if expand else {}


def idempotent(key: str) -> dict[str, Any]:
    """The request options of a write that Stripe must apply once, however often it is retried."""
    return {"options": {"idempotency_key": key}}


def every(operation: str, **params: Any) -> list[dict[str, Any]]:
    """Every object of a list request, page after page (the later pages are fetched by the library's iterator)."""
    return [to_dict(obj) for obj in stripe_request(operation, params=params).auto_paging_iter()]


def first_page(operation: str, **params: Any) -> list[dict[str, Any]]:
    """The objects of a list request's first page (the callers ask for at most one page)."""
    return [to_dict(obj) for obj in stripe_request(operation, params=params).data]


# --- customers ----------------------------------------------------------------------------------------------------


def retrieve_customer(customer_id: str, expand: list[str] | None = None) -> dict[str, Any]:
    """A customer (its `metadata.user_id` links it to our user; `expand` adds its default card)."""
    return to_dict(stripe_request("customers.retrieve", customer_id, **expanded(expand)))


def create_customer_with(params: dict[str, Any]) -> dict[str, Any]:
    """A customer with any creation parameters (`flask stripe trigger`'s test customers, with their test card)."""
    return to_dict(stripe_request("customers.create", params=params))


def update_customer(customer_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Change a customer's details (`flask stripe trigger customer.updated`)."""
    return to_dict(stripe_request("customers.update", customer_id, params=params))


def update_customer_email(customer_id: str, email: str, idempotency_key: str) -> dict[str, Any]:
    """Set the customer's email to the user's new login email, once the user proved to own it (once per key)."""
    return to_dict(
        stripe_request("customers.update", customer_id, params={"email": email}, **idempotent(idempotency_key))
    )


def create_customer(email: str, metadata: dict[str, str], idempotency_key: str) -> dict[str, Any]:
    """Create the user's customer, once per idempotency key."""
    return to_dict(
        stripe_request("customers.create", params={"email": email, "metadata": metadata}, **idempotent(idempotency_key))
    )


# --- subscriptions and their schedules ------------------------------------------------------------------------------


def list_subscriptions(customer_id: str) -> list[dict[str, Any]]:
    """Every subscription of the customer, whatever its status."""
    return every("subscriptions.list", customer=customer_id, status="all", limit=100)


def retrieve_subscription(subscription_id: str, expand: list[str] | None = None) -> dict[str, Any]:
    """A subscription as Stripe holds it now (`expand` for its schedule or payment method)."""
    return to_dict(stripe_request("subscriptions.retrieve", subscription_id, **expanded(expand)))


def update_subscription(subscription_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Change a subscription (price, cancellation), once per idempotency key."""
    return to_dict(
        stripe_request("subscriptions.update", subscription_id, params=params, **idempotent(idempotency_key))
    )


def create_subscription(params: dict[str, Any]) -> dict[str, Any]:
    """A subscription made directly (`flask stripe trigger` in a Stripe test-mode account; the app itself
    subscribes through Checkout only)."""
    return to_dict(stripe_request("subscriptions.create", params=params))


def cancel_subscription(subscription_id: str) -> dict[str, Any]:
    """End a subscription now (`flask stripe trigger customer.subscription.deleted`)."""
    return to_dict(stripe_request("subscriptions.cancel", subscription_id))


def create_subscription_schedule(from_subscription: str, idempotency_key: str) -> dict[str, Any]:
    """A schedule taking over the subscription as it is now, once per idempotency key."""
    return to_dict(
        stripe_request(
            "subscription_schedules.create",
            params={"from_subscription": from_subscription},
            **idempotent(idempotency_key),
        )
    )


def update_subscription_schedule(schedule_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Set a schedule's phases and end behaviour, once per idempotency key."""
    return to_dict(
        stripe_request("subscription_schedules.update", schedule_id, params=params, **idempotent(idempotency_key))
    )


def release_subscription_schedule(schedule_id: str, idempotency_key: str) -> dict[str, Any]:
    """Detach a schedule, leaving its subscription as it is (canceling would end it)."""
    return to_dict(stripe_request("subscription_schedules.release", schedule_id, **idempotent(idempotency_key)))


# --- invoices and events --------------------------------------------------------------------------------------------


def list_invoices(customer_id: str, limit: int) -> list[dict[str, Any]]:
    """The customer's newest invoices (one page)."""
    return first_page("invoices.list", customer=customer_id, limit=limit)


def preview_invoice(params: dict[str, Any]) -> dict[str, Any]:
    """What Stripe would invoice for a change, without changing anything."""
    return to_dict(stripe_request("invoices.create_preview", params=params))


def list_events(limit: int) -> list[dict[str, Any]]:
    """The account's newest events (one page)."""
    return first_page("events.list", limit=limit)


def list_events_of_type(event_type: str, limit: int) -> list[dict[str, Any]]:
    """The account's newest events of one type (one page)."""
    return first_page("events.list", type=event_type, limit=limit)


# --- Checkout and the Customer Portal -------------------------------------------------------------------------------


def create_checkout_session(params: dict[str, Any]) -> dict[str, Any]:
    """A hosted Checkout page for a subscription."""
    return to_dict(stripe_request("checkout.sessions.create", params=params))


def retrieve_checkout_session(session_id: str) -> dict[str, Any]:
    """A Checkout Session (the success page reads its payment status)."""
    return to_dict(stripe_request("checkout.sessions.retrieve", session_id))


def list_checkout_sessions(customer_id: str, status: str) -> list[dict[str, Any]]:
    """The customer's Checkout Sessions in `status` (one page of up to 100)."""
    return first_page("checkout.sessions.list", customer=customer_id, status=status, limit=100)


def expire_checkout_session(session_id: str) -> dict[str, Any]:
    """Close an open Checkout Session, so it can no longer be paid."""
    return to_dict(stripe_request("checkout.sessions.expire", session_id))


def create_portal_session(params: dict[str, Any]) -> dict[str, Any]:
    """A Customer Portal link for the customer (optionally straight into one flow)."""
    return to_dict(stripe_request("billing_portal.sessions.create", params=params))


def list_portal_configurations() -> list[dict[str, Any]]:
    """Every Customer Portal configuration (the doctor checks the default one)."""
    return every("billing_portal.configurations.list", limit=100)


def create_portal_configuration(params: dict[str, Any]) -> dict[str, Any]:
    """A new Customer Portal configuration (`flask stripe portal-config` when the account has none)."""
    return to_dict(stripe_request("billing_portal.configurations.create", params=params))


def update_portal_configuration(configuration_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Set a Customer Portal configuration's features (`flask stripe portal-config`)."""
    return to_dict(stripe_request("billing_portal.configurations.update", configuration_id, params=params))


# --- the catalog and the webhook endpoint (operator commands) -------------------------------------------------------


def retrieve_price(price_id: str) -> dict[str, Any]:
    """A price (the doctor compares its amount and interval with the plan's)."""
    return to_dict(stripe_request("prices.retrieve", price_id))


def list_prices(lookup_keys: list[str]) -> list[dict[str, Any]]:
    """The active prices with these lookup keys (one page of up to 100)."""
    return first_page("prices.list", lookup_keys=lookup_keys, active=True, limit=100)


def create_price(params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Create a catalog price, once per idempotency key."""
    return to_dict(stripe_request("prices.create", params=params, **idempotent(idempotency_key)))


def list_products() -> list[dict[str, Any]]:
    """Every product of the account."""
    return every("products.list", limit=100)


def create_product(params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """Create a catalog product, once per idempotency key."""
    return to_dict(stripe_request("products.create", params=params, **idempotent(idempotency_key)))


def list_webhook_endpoints() -> list[dict[str, Any]]:
    """Every webhook endpoint of the account."""
    return every("webhook_endpoints.list", limit=100)


def create_webhook_endpoint(params: dict[str, Any]) -> dict[str, Any]:
    """Register a webhook endpoint (its signing secret is only in this answer)."""
    return to_dict(stripe_request("webhook_endpoints.create", params=params))


def delete_webhook_endpoint(endpoint_id: str) -> dict[str, Any]:
    """Remove a webhook endpoint."""
    return to_dict(stripe_request("webhook_endpoints.delete", endpoint_id))


def verify_webhook_signature(payload: bytes, signature: str, secret: str, tolerance: int) -> None:
    """Check a webhook's `Stripe-Signature` against one secret (no request to Stripe; the body is not parsed)."""
    gateway().verify_webhook(payload, signature, secret, tolerance=tolerance)
