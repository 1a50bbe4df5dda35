"""What every ``/v1`` call shares: the instance behind the app, authentication, bracket-notation
decoding, the state lock, Idempotency-Key replay, the API version header, Stripe's error JSON and
``expand[]`` on the way out.

Resource modules (``stripe_emulator.api.*``) register handlers with :func:`api`; a handler gets
``(p: Params, ctx: Ctx, **url args)`` and returns a Stripe object (a dict) or raises
:class:`StripeError`; this module turns either into the HTTP answer.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request

from . import declared, objects
from .billing import Billing, Ctx
from .emulator import Emulator
from .errors import StripeError, invalid, masked_key
from .expand import Includable, expand
from .forms import FormError, decode
from .params import Params
from .store import Store, new_id

Handler = Callable[..., object]

# Fields Stripe only includes when expanded, registered by the resource that owns them.
INCLUDABLES: dict[tuple[str, str], Includable] = {}


def emu() -> Emulator:
    """The emulator instance the current app serves."""
    return current_app.extensions["stripe_emulator"]


def store() -> Store:
    """The current instance's state."""
    return emu().store


def engine() -> Billing:
    """The current instance's billing engine."""
    return emu().billing


def base_url() -> str:
    """Where hosted pages live: ``--public-url`` if given, else the address the client used."""
    return (emu().config.public_url or request.host_url).rstrip("/")


def includable(kind: str, field: str) -> Callable[[Includable], Includable]:
    """Register ``fn(store, obj)`` as the builder of ``field`` on objects of ``kind``, shown only when expanded."""

    def decorator(fn: Includable) -> Includable:
        INCLUDABLES[(kind, field)] = fn
        return fn

    return decorator


# ---------------------------------------------------------------------- responses
def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    """JSON with the pinned ``Stripe-Version``; ``body`` may already be serialized text."""
    text = body if isinstance(body, str) else json.dumps(body, indent=2)
    resp = Response(text, status=status, mimetype="application/json")
    resp.headers["Stripe-Version"] = objects.API_VERSION
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def error_response(err: StripeError, request_id: str) -> Response:
    """Stripe's ``{"error": {...}}`` body, with the request log URL Stripe adds."""
    body = err.body()
    body["error"]["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
    return json_response(body, err.status, {"Request-Id": request_id})


def unrecognized_url() -> Response:
    """Stripe answers an unknown path or method with a 404 ``invalid_request_error``."""
    return error_response(
        StripeError(
            f"Unrecognized request URL ({request.method}: {request.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            status=404,
        ),
        new_id("req", 14),
    )


def render(result, expand_paths: list) -> dict:
    """Apply ``expand[]`` (``data.x`` paths apply to each element of a list) on a copy; embedded lists get their
    ``total_count`` (``objects.count_sublists``). Hosted pages' addresses stay paths: ``objects.public_urls`` makes
    them absolute for the answer."""
    s = store()
    if isinstance(result, dict) and result.get("object") == "list" and expand_paths:
        out = dict(result)
        inner = []
        for path in expand_paths:
            if not path.startswith("data."):
                raise StripeError(
                    f"This property cannot be expanded ({path}). You may want to try expanding 'data.{path}' instead.",
                    param="expand",
                )
            inner.append(path[len("data.") :])
        out["data"] = [expand(s, o, inner, INCLUDABLES) for o in result["data"]]
        return objects.count_sublists(out)
    if isinstance(result, dict) and expand_paths:
        return objects.count_sublists(expand(s, result, expand_paths, INCLUDABLES))
    return objects.count_sublists(copy.deepcopy(result))


# ---------------------------------------------------------------------- request
def check_auth() -> StripeError | None:
    """One of the keys the emulator was started with (``--api-key``; any ``sk_test_…`` key with
    ``--any-test-key``), as Bearer or Basic auth; otherwise Stripe's 401, the key masked as Stripe masks it."""
    header = request.headers.get("Authorization", "")
    key = None
    if header.startswith("Bearer "):
        key = header[7:].strip()
    elif request.authorization and request.authorization.type == "basic":
        key = request.authorization.username
    if not key:
        return StripeError(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            status=401,
            code=None,
        )
    accepted = emu().config.api_keys
    well_formed = key.startswith("sk_test_") and len(key) > len("sk_test_")
    if not well_formed or (accepted is not None and key not in accepted):
        return StripeError(f"Invalid API Key provided: {masked_key(key)}", status=401, code="api_key_invalid")
    return None


def check_version(requested: str | None) -> None:
    """The emulator renders one API version's shapes: a request for another gets a clear 400, never a
    silently different shape. No header means the account's version, which is the emulator's."""
    if requested is None or requested == objects.API_VERSION:
        return
    if requested not in declared.api_versions():
        raise StripeError(f"Invalid Stripe API version: {requested}")
    raise StripeError(objects.unsupported_version(requested))


def decoded_params() -> dict:
    """Query string (GET, DELETE) or form body, bracket notation decoded into nested dicts and lists."""
    if request.method in ("GET", "DELETE"):
        pairs = parse_qsl(request.query_string.decode("utf-8"), keep_blank_values=True)
        if request.method == "DELETE" and request.content_length:
            pairs += parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
    else:
        pairs = parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
    return decode(pairs)


# ---------------------------------------------------------------------- idempotency
class Idempotency:
    """One request's Idempotency-Key: the stored record's key and the request's fingerprint.

    The record is keyed by API key + Idempotency-Key; the fingerprint (method, path, body) tells a
    replay (same fingerprint) from a misuse of the key (different one). As on Stripe, a key reused with
    other parameters is a 400 ``idempotency_error`` (saved answers stay), and a key whose first request is
    still being carried out is a 409 ``idempotency_key_in_use`` (nothing saved; stripe-python retries 409s).
    """

    def __init__(self, key: str):
        self.key = key
        self.record_key = hashlib.sha256((request.headers.get("Authorization", "") + "\0" + key).encode()).hexdigest()
        self.fingerprint = hashlib.sha256(
            (request.method + " " + request.path + "\0" + request.get_data(as_text=True)).encode()
        ).hexdigest()

    def replay(self, s: Store, request_id: str) -> Response | None:
        """The stored answer for a repeated request, an ``idempotency_error`` for a reused key, else None."""
        seen = s.internal("idempotency").get(self.record_key)
        if not seen:
            return None
        if seen["fingerprint"] != self.fingerprint:
            return error_response(
                StripeError(
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{self.key}' if you meant to execute a different request.",
                    type="idempotency_error",
                ),
                request_id,
            )
        return json_response(
            json.dumps(objects.public_urls(json.loads(seen["body"]), base_url()), indent=2),
            seen["status"],
            {"Request-Id": seen["request_id"], "Idempotent-Replayed": "true", "Idempotency-Key": self.key},
        )

    def begin(self, request_id: str) -> Response | None:
        """Mark the key in flight until ``end``; a 409 ``idempotency_key_in_use`` when it already is."""
        e = emu()
        with e.in_flight_lock:
            if self.record_key not in e.in_flight:
                e.in_flight.add(self.record_key)
                return None
        return error_response(
            StripeError(
                "There is currently another in-progress request using this Idempotent Key (that probably means you "
                f"submitted twice, and the other request is still going through): {self.key}. Please try again "
                "later.",
                status=409,
                code="idempotency_key_in_use",
            ),
            request_id,
        )

    def end(self) -> None:
        e = emu()
        with e.in_flight_lock:
            e.in_flight.discard(self.record_key)

    def remember(self, s: Store, status: int, text: str, request_id: str) -> None:
        """Keep the answer so a retry with the same key gets it back."""
        s.internal("idempotency")[self.record_key] = {
            "fingerprint": self.fingerprint,
            "status": status,
            "body": text,
            "request_id": request_id,
            "created": s.now(),
        }


# ---------------------------------------------------------------------- the pipeline
def _execute(fn: Handler, data: dict, kwargs: dict, request_id: str, idem: Idempotency | None) -> Response:
    """Run one handler under the state lock: replay, call, render, remember, save."""
    s = store()
    with s.lock:
        if idem:
            replayed = idem.replay(s, request_id)
            if replayed is not None:
                return replayed
        ctx = Ctx(base_url=base_url(), request_id=request_id, idempotency_key=idem.key if idem else None)
        p = Params(data)
        if request.method == "GET":
            p.ignore("limit", "starting_after", "ending_before")  # read by listing.paginate()
        try:
            result = fn(p, ctx, **kwargs)
            rendered = render(result, p.list("expand") or [])
            # An Idempotency-Key's answer is kept with its hosted pages' paths, to be replayed on the URL of then.
            kept = json.dumps(rendered, indent=2) if idem else None
            status, text = 200, json.dumps(objects.public_urls(rendered, ctx.base_url), indent=2)
        except StripeError as err:
            if err.status != 402 or not idem:
                if request.method != "GET":
                    s.save()
                return error_response(err, request_id)
            # Card errors happened after the request started executing: Stripe replays them.
            status, text = err.status, json.dumps(err.body(), indent=2)
            kept = text
        if idem:
            idem.remember(s, status, kept or text, request_id)
        if request.method != "GET":
            s.save()
    headers = {"Request-Id": request_id}
    if idem:
        headers["Idempotency-Key"] = idem.key
    return json_response(text, status, headers)


def api(bp: Blueprint, rule: str, methods: list[str]) -> Callable[[Handler], Handler]:
    """Register an API route on ``bp``. The handler gets (p: Params, ctx: Ctx, **url args)
    and returns a Stripe object (dict); the wrapper does everything else."""

    def decorator(fn: Handler) -> Handler:
        def view(**kwargs):
            request_id = new_id("req", 14)
            auth_error = check_auth()
            if auth_error:
                return error_response(auth_error, request_id)
            try:
                data = decoded_params()
            except FormError as exc:
                return error_response(invalid(exc.param, str(exc)), request_id)
            try:
                check_version(request.headers.get("Stripe-Version"))
                declared.check_request(request.method, request.url_rule.rule, data)
            except StripeError as err:
                return error_response(err, request_id)
            idem_key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
            if not idem_key:
                return _execute(fn, data, kwargs, request_id, None)
            idem = Idempotency(idem_key)
            busy = idem.begin(request_id)
            if busy is not None:
                return busy
            try:
                return _execute(fn, data, kwargs, request_id, idem)
            finally:
                idem.end()

        view.__name__ = "api_" + fn.__name__
        bp.add_url_rule(rule, view.__name__, view, methods=methods)
        return fn

    return decorator
