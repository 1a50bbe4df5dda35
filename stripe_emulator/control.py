"""The control API under ``/_emulator``: things Stripe does not let you do, for tests and scripts.

Pay a Checkout Session without a browser, move the clock, wipe the state,
inspect and steer webhook deliveries (hold, release, duplicate, shuffle,
delay, wait until the queue is empty). No authentication: the emulator is a
local development tool bound to 127.0.0.1 by default.
"""

from __future__ import annotations

import time

from flask import Blueprint, request

from . import objects
from .billing import Ctx
from .errors import StripeError, invalid, missing_param, no_such
from .plumbing import base_url, emu, error_response, json_response, render
from .store import new_id

bp = Blueprint("control", __name__, url_prefix="/_emulator")


def _args() -> dict:
    """Form, JSON body or query string: whatever the caller found convenient."""
    data = dict(request.args)
    if request.is_json:
        data.update(
            {k: str(v) if not isinstance(v, str) else v for k, v in (request.get_json(silent=True) or {}).items()}
        )
    else:
        data.update(request.form.to_dict())
    return data


def _flag(data: dict, key: str) -> bool:
    """Whether ``key`` is set to a truthy word (1, true, yes, on)."""
    return str(data.get(key, "")).lower() in ("1", "true", "yes", "on")


@bp.errorhandler(StripeError)
def _stripe_error(err: StripeError):
    """Control API errors use Stripe's error JSON, like the API."""
    return error_response(err, new_id("req", 14))


@bp.get("/health")
def health():
    """Liveness and the emulator's current time."""
    return json_response({"ok": True, "now": emu().store.now()})


@bp.post("/checkout/<cs_id>/complete")
def complete_checkout(cs_id: str):
    """Pay like the hosted page would: ``card`` (default 4242...), optional ``email``, ``name``."""
    data = _args()
    e = emu()
    with e.store.lock:
        cs = e.store.get("checkout_sessions", cs_id)
        if cs is None:
            raise no_such("checkout.session", cs_id)
        try:
            e.billing.complete_checkout(
                Ctx(base_url()),
                cs,
                data.get("card") or "4242424242424242",
                email=data.get("email") or None,
                name=data.get("name") or None,
            )
        finally:
            e.store.save()
        body = render(cs, ["subscription"] if _flag(data, "expand_subscription") else [])
    return json_response(objects.public_urls(body, base_url()))


@bp.get("/clock")
def clock():
    """The emulator's current time and its offset from real time."""
    e = emu()
    return json_response({"now": e.store.now(), "offset": e.store.state["clock_offset"]})


@bp.post("/clock/advance")
def advance_clock():
    """Move time forward by ``days``/``hours``/``seconds`` or ``to`` a unix time.

    Renewals, payment retries, cancellations at period end and Checkout
    expiries due on the way run in chronological order. ``wait=1`` also waits
    until the resulting webhooks are delivered.
    """
    data = _args()
    e = emu()
    with e.store.lock:
        now = e.store.now()
        if "to" in data:
            try:
                target = int(data["to"])
            except ValueError:
                raise invalid("to", "Invalid integer: " + data["to"]) from None
            if target < now:
                raise invalid("to", "The clock only moves forward.")
        else:
            try:
                delta = (
                    float(data.get("days", 0)) * 86400
                    + float(data.get("hours", 0)) * 3600
                    + float(data.get("seconds", 0))
                )
            except ValueError:
                raise invalid("days", "days, hours and seconds must be numbers") from None
            if delta <= 0:
                raise missing_param("days")
            target = now + int(delta)
        new_now = e.billing.advance_to(Ctx(base_url()), target)
        e.store.save()
    if _flag(data, "wait"):
        e.dispatcher.wait_idle(float(data.get("timeout", 30)))
    return json_response({"now": new_now, "offset": e.store.state["clock_offset"]})


@bp.post("/reset")
def reset():
    """Forget everything; the catalog comes back."""
    emu().reset()
    return json_response({"ok": True})


@bp.get("/deliveries")
def deliveries():
    """Every webhook attempt; ``wait=1`` first waits until the queue is empty.

    Filters: ``event_id``, ``type``, ``ok=1|0``.
    """
    e = emu()
    if _flag(request.args, "wait"):
        e.dispatcher.wait_idle(float(request.args.get("timeout", 30)))
    with e.dispatcher._cond:
        attempts = list(e.dispatcher.attempts)
    for key in ("event_id", "type"):
        if request.args.get(key):
            attempts = [a for a in attempts if a[key] == request.args[key]]
    if "ok" in request.args:
        want = _flag(request.args, "ok")
        attempts = [a for a in attempts if a["ok"] == want]
    return json_response(
        {"object": "list", "data": attempts, "pending": e.dispatcher.pending(), "chaos": e.dispatcher.chaos.as_dict()}
    )


@bp.post("/deliveries/release")
def release():
    """Deliver what ``hold=1`` kept back (and stop holding new ones unless ``keep_holding=1``)."""
    data = _args()
    e = emu()
    if not _flag(data, "keep_holding"):
        e.dispatcher.chaos.hold = False
    n = e.dispatcher.release()
    if _flag(data, "wait"):
        e.dispatcher.wait_idle(float(data.get("timeout", 30)))
    return json_response({"released": n, "pending": e.dispatcher.pending()})


@bp.post("/webhooks/flush")
def flush():
    """Block until no delivery is queued or in flight (held ones excepted); 504 on timeout."""
    data = _args()
    e = emu()
    started = time.monotonic()
    ok = e.dispatcher.wait_idle(float(data.get("timeout", 30)))
    body = {"idle": ok, "waited_ms": int((time.monotonic() - started) * 1000), "pending": e.dispatcher.pending()}
    return json_response(body, 200 if ok else 504)


@bp.route("/chaos", methods=["GET", "POST"])
def chaos():
    """Fault injection: ``duplicate``, ``shuffle``, ``delay_ms``, ``hold``, ``fail_first``, ``concurrency``
    (deliveries in flight at once); ``reset=1`` clears all."""
    e = emu()
    if request.method == "POST":
        data = _args()
        c = e.dispatcher.chaos
        if _flag(data, "reset"):
            c.duplicate = c.shuffle = c.hold = False
            c.delay_ms = c.fail_first = 0
            e.dispatcher.set_concurrency(1)
        for key in ("duplicate", "shuffle", "hold"):
            if key in data:
                setattr(c, key, _flag(data, key))
        for key in ("delay_ms", "fail_first"):
            if key in data:
                try:
                    setattr(c, key, max(0, int(data[key])))
                except ValueError:
                    raise invalid(key, f"Invalid integer: {data[key]}") from None
        if "concurrency" in data:
            try:
                e.dispatcher.set_concurrency(int(data["concurrency"]))
            except ValueError:
                raise invalid("concurrency", f"Invalid integer: {data['concurrency']}") from None
        if not c.hold:
            e.dispatcher.release()
    return json_response(e.dispatcher.chaos.as_dict())


@bp.get("/state")
def state():
    """The raw state, for debugging."""
    e = emu()
    with e.store.lock:
        return json_response(e.store.state)
