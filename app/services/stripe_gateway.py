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

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe
from flask import Flask, current_app

from app.logging import get_logger, redact_text
from app.services import DomainError
from app.services.metrics import STRIPE_API_ERRORS, STRIPE_API_REQUEST_SECONDS

T = TypeVar("T")
log = get_logger("app.stripe")

#: The API version every request asks for, and the only shape of event the webhook handlers read.
API_VERSION: str = stripe.api_version
EMULATOR_API_BASE = "http://127.0.0.1:12111"
EMULATOR_API_KEY = "sk_test_emulator"
UNAVAILABLE_MESSAGE = "Billing is temporarily unavailable — nothing was charged, please try again."


class StripeFailure(DomainError):
    """A request Stripe did not carry out. `message` is for the customer; `cause` and `fix` are for operators (the
    CLI and `flask doctor`): what Stripe or the network said, without the key, and what to do about it."""

    cause: str = ""
    fix: str = ""

    def operator_line(self) -> str:
        """The cause and its fix on one line (the customer's message when there is no cause)."""
        text = self.cause or self.message
        return f"{text}: {self.fix}" if self.fix else text


class BillingUnavailable(StripeFailure):
    """Stripe could not be reached or failed on its side; nothing was changed."""

    code = "billing_unavailable"
    status = 503

    def __init__(self, message: str = UNAVAILABLE_MESSAGE):
        super().__init__(message)


class StripeKeyRefused(BillingUnavailable):
    """Stripe refused the API key (401) or what the key may do (403): the configuration is wrong, not Stripe down.

    A customer still reads that billing is unavailable; an operator reads which key to fix."""


class StripeUnreachable(BillingUnavailable):
    """No answer from the API base after the client's retries: refused, DNS, TLS, a timeout."""


class PaymentDeclined(StripeFailure):
    code = "card_declined"
    status = 402


class StripeRequestFailed(StripeFailure):
    """Stripe refused a request (a bug or a stale id on our side, not the person's fault)."""

    code = "billing_request_failed"
    status = 502


class IdempotencyKeyReused(StripeRequestFailed):
    """Stripe refused an idempotency key of ours that an earlier request (within Stripe's 24 hours or more) used
    with other parameters: nothing was done, and the same key keeps failing until Stripe forgets it. A bug or
    another install on the same Stripe account, for an operator to look into (logged `stripe_idempotency_key_reused`)."""

    code = "idempotency_key_reused"


class StripeObjectMissing(StripeFailure):
    code = "not_found"
    status = 404


def operator_message(error: DomainError) -> str:
    """What an operator should read for a domain error: a Stripe failure's cause and fix, else its message."""
    return error.operator_line() if isinstance(error, StripeFailure) else error.message


#: A Stripe key (whole, or masked as Stripe shows it in "Invalid API Key provided: sk_live_****1234") in a message.
KEY_IN_TEXT = re.compile(r"\b[sr]k_(?:live_|test_)?\S*")
#: The object urllib3 names at the start of its errors ("<…HTTPConnection object at 0x7f…>: ").
OBJECT_REPR = re.compile(r"^<[^>]*>:\s*")
#: The connection pool urllib3 names at the start of its errors ("HTTPConnectionPool(host='…', port=…): ").
POOL_PREFIX = re.compile(r"^\w+ConnectionPool\([^)]*\):\s*")


def stripe_said(error: stripe.StripeError) -> str:
    """Stripe's own message, one line, with any key (even masked) and secret taken out."""
    text = " ".join(str(error.user_message or "").split())
    text = KEY_IN_TEXT.sub("", text).rstrip(" :")
    return redact_text(text) or "no message"


def key_kind(api_key: str) -> str:
    """Which kind of key this is ("a sk_live_… key"), never any of its secret part."""
    for prefix in ("sk_live_", "sk_test_", "rk_live_", "rk_test_"):
        if api_key.startswith(prefix):
            return f"a {prefix}… key"
    return "a key that is not a Stripe secret key (sk_live_…, sk_test_…)"


def network_cause(error: BaseException) -> str:
    """The innermost reason of a connection error ("[Errno 111] Connection refused", "Read timed out.").

    The client's own message is the same for every cause; requests and urllib3 keep the real one down the chain
    (`__cause__`, then MaxRetryError's `reason`)."""
    inner: BaseException = error
    while True:
        reason = getattr(inner, "reason", None)
        if isinstance(reason, BaseException):
            inner = reason
        elif inner.__cause__ is not None:
            inner = inner.__cause__
        elif inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        else:
            break
    text = POOL_PREFIX.sub("", OBJECT_REPR.sub("", " ".join(str(inner).split())))
    return redact_text(text or type(inner).__name__)


# Stripe errors and whether they are worth retrying at the caller's level; the client itself already retried
# connection errors and 5xx `max_network_retries` times.
def translate(
    error: stripe.StripeError, operation: str = "", api_base: str = "", key: str = "the API key"
) -> StripeFailure:
    """A Stripe error as a domain error with a message a person understands, and its cause for operators
    (`key` describes the key, as `key_kind` does)."""
    domain = customer_error(error)
    domain.cause, domain.fix = operator_cause(error, operation, api_base or stripe.DEFAULT_API_BASE, key)
    return domain


def customer_error(error: stripe.StripeError) -> StripeFailure:
    """The domain error a customer is shown for a Stripe error."""
    if isinstance(error, stripe.CardError):
        return PaymentDeclined(
            "Your card was declined."
            if error.code == "card_declined"
            else f"Your card could not be charged: {error.user_message or 'please try another card.'}"
        )
    if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
        return StripeKeyRefused()
    if isinstance(error, stripe.APIConnectionError):
        return StripeUnreachable()
    if isinstance(error, stripe.APIError) and error.http_status == 409:
        # Stripe's `idempotency_key_in_use`: the same request (same key) is still being carried out, after the
        # client's own retries. Once it is done, trying again gets its answer.
        return BillingUnavailable("This request is already being processed — please wait a moment and try again.")
    if isinstance(error, (stripe.APIError, stripe.RateLimitError)):
        return BillingUnavailable()
    if isinstance(error, stripe.InvalidRequestError) and error.http_status == 404:
        return StripeObjectMissing("We could not find that billing record.")
    if isinstance(error, stripe.IdempotencyError):
        # 400 `idempotency_error`: the key was used before with other parameters. Not "being processed": retrying
        # the same request fails the same way until Stripe forgets the key.
        return IdempotencyKeyReused(
            "Billing could not start this request. Nothing was charged; please try again in a minute."
        )
    return StripeRequestFailed("Billing could not complete this request. Nothing was charged.")


def operator_cause(error: stripe.StripeError, operation: str, api_base: str, key: str) -> tuple[str, str]:
    """(cause, fix) of a Stripe error for an operator: what failed where, in Stripe's words without the key."""
    said = f"{error.http_status or '?'}: {stripe_said(error)}"
    if isinstance(error, stripe.AuthenticationError):
        return (
            f"Stripe at {api_base} refused the API key ({said}; {key})",
            "check STRIPE_SECRET_KEY (Stripe Dashboard → Developers → API keys)",
        )
    if isinstance(error, stripe.PermissionError):
        return (
            f"Stripe at {api_base} does not let this API key do {operation} ({said})",
            "set STRIPE_SECRET_KEY to the account's secret key, or a restricted key with this permission",
        )
    if isinstance(error, stripe.APIConnectionError):
        fix = "check that this host reaches it (network, proxy, firewall) and STRIPE_API_BASE"
        if api_base == EMULATOR_API_BASE:
            fix = (
                "start the bundled emulator (`make run` does, or `python -m stripe_emulator`), or set STRIPE_SECRET_KEY"
            )
        return f"Could not reach Stripe at {api_base}: {network_cause(error)}", fix
    if isinstance(error, stripe.RateLimitError):
        return f"Stripe at {api_base} is limiting this account's requests ({said})", "wait a minute and run it again"
    if isinstance(error, stripe.APIError) and error.http_status == 409:
        return (
            f"Stripe at {api_base} is still carrying out another request with the same idempotency key ({said})",
            "the same request was sent twice at once; run it again once the first one is done",
        )
    if isinstance(error, stripe.APIError):
        return f"Stripe at {api_base} failed on its side ({said})", "run it again later (status.stripe.com)"
    if isinstance(error, stripe.IdempotencyError):
        return (
            f"Stripe refused {operation or 'the request'}: its idempotency key was already used with other "
            f"parameters ({said})",
            "Stripe keeps keys for 24 hours or more per account: check that no other install (staging, development, "
            "a restored database) uses this Stripe account's key, else report the key Stripe names as a bug",
        )
    return f"Stripe refused {operation or 'the request'} ({said})", ""


class StripeGateway:
    """A StripeClient with error translation, timing and a call counter."""

    def __init__(self, api_key: str, api_base: str | None, max_network_retries: int = 2, timeout: float = 20):
        self.api_base = api_base
        self.is_emulator = api_base is not None
        self.key_kind = key_kind(api_key)  # what operators are told of the key: its kind, never the key
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
            failure = translate(error, operation, self.api_base or "", self.key_kind)
            if isinstance(failure, IdempotencyKeyReused):
                log.error(
                    "stripe_idempotency_key_reused",
                    operation=operation,
                    stripe_request_id=error.request_id,
                    cause=failure.cause,
                    fix=failure.fix,
                )
            raise failure from None
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
    """The prices holding these lookup keys, archived ones too (a lookup key stays on an archived price, and Stripe
    refuses it to a new price unless it is transferred); one page of up to 100."""
    return first_page("prices.list", lookup_keys=lookup_keys, limit=100)


def update_price(price_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Change a price's `active` flag, lookup key or metadata (its amount and interval never change)."""
    return to_dict(stripe_request("prices.update", price_id, params=params))


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


def update_webhook_endpoint(endpoint_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Change a webhook endpoint's events (`flask stripe webhook-endpoint` on an endpoint that lacks some)."""
    return to_dict(stripe_request("webhook_endpoints.update", endpoint_id, params=params))


def delete_webhook_endpoint(endpoint_id: str) -> dict[str, Any]:
    """Remove a webhook endpoint."""
    return to_dict(stripe_request("webhook_endpoints.delete", endpoint_id))


def verify_webhook_signature(payload: bytes, signature: str, secret: str, tolerance: int) -> None:
    """Check a webhook's `Stripe-Signature` against one secret (no request to Stripe; the body is not parsed)."""
    gateway().verify_webhook(payload, signature, secret, tolerance=tolerance)
