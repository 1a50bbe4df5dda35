"""Webhook delivery: Stripe's signature scheme, retries, registered endpoints and chaos."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from emulator_helpers import subscribe

from stripe_emulator.testing import WebhookReceiver
from stripe_emulator.webhooks import sign


def test_every_delivery_verifies_and_tampering_does_not(emulator, client, receiver):
    subscribe(emulator, client)
    emulator.flush()
    assert len(receiver.requests) >= 8
    for req in receiver.requests:
        header = req["headers"]["Stripe-Signature"]
        event = stripe.Webhook.construct_event(req["body"], header, receiver.secret)
        assert event.id.startswith("evt_")
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(
                req["body"].replace('"livemode": false', '"livemode": true', 1), header, receiver.secret
            )
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(req["body"], header, "whsec_wrong")


def test_old_timestamp_is_rejected():
    body = json.dumps({"id": "evt_1", "object": "event", "type": "ping", "data": {"object": {}}})
    old = sign(body, "whsec_test", timestamp=int(time.time()) - 301)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, old, "whsec_test")
    fresh = sign(body, "whsec_test")
    assert stripe.Webhook.construct_event(body, fresh, "whsec_test").id == "evt_1"


def test_signature_uses_wall_clock_even_after_advancing(emulator, client, receiver):
    sub = subscribe(emulator, client)
    emulator.advance(days=40)
    emulator.flush()
    last = receiver.requests[-1]
    ts = int(last["headers"]["Stripe-Signature"].split(",")[0][2:])
    assert abs(ts - time.time()) < 60
    event = stripe.Webhook.construct_event(last["body"], last["headers"]["Stripe-Signature"], receiver.secret)
    assert event.created > time.time() + 28 * 86400  # the event itself follows the emulator clock
    assert sub.id


def test_retries_non_2xx_with_fresh_signatures(emulator, client):
    with WebhookReceiver(status=500) as hook:
        emulator.add_webhook(hook.url, hook.secret)
        client.v1.customers.create({"email": "retry@example.com"})
        deadline = time.monotonic() + 5
        while len(hook.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        hook.respond_with(200)
        emulator.flush()
        attempts = emulator.deliveries(type="customer.created")
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[0]["status_code"] == 500 and not attempts[0]["ok"]
        assert attempts[-1]["ok"] and attempts[-1]["status_code"] == 200
        for attempt, req in zip(attempts, hook.requests, strict=False):  # each attempt signed when it is sent
            assert req["headers"]["Stripe-Signature"] == attempt["signature"]
            assert int(attempt["signature"].split(",")[0][2:]) == int(attempt["sent_at"])
            stripe.Webhook.construct_event(req["body"], attempt["signature"], hook.secret)
        assert hook.events()[-1]["type"] == "customer.created"


def test_gives_up_after_max_attempts(emulator, client):
    with WebhookReceiver(status=400) as hook:
        emulator.add_webhook(hook.url, hook.secret)
        client.v1.customers.create({"email": "nope@example.com"})
        emulator.flush()
        attempts = emulator.deliveries(type="customer.created")
        assert len(attempts) == 5 and not any(a["ok"] for a in attempts)
        assert attempts[-1]["will_retry"] is False


def test_endpoints_registered_through_the_api(emulator, client):
    with WebhookReceiver() as hook:
        endpoint = client.v1.webhook_endpoints.create({"url": hook.url, "enabled_events": ["customer.created"]})
        assert endpoint.secret.startswith("whsec_") and endpoint.status == "enabled"
        listed = client.v1.webhook_endpoints.list()
        assert [e.id for e in listed.data] == [endpoint.id] and listed.data[0].secret is None
        cust = client.v1.customers.create({"email": "a@example.com"})
        client.v1.customers.update(cust.id, {"name": "Not delivered: not enabled"})
        emulator.flush()
        hook.secret = endpoint.secret
        assert [e["type"] for e in hook.events()] == ["customer.created"]
        event = client.v1.events.retrieve(hook.events()[0]["id"])
        assert event.pending_webhooks == 1


def test_hold_and_release(emulator, client, raw, receiver):
    emulator.chaos(hold=1)
    client.v1.customers.create({"email": "held@example.com"})
    emulator.flush()  # held deliveries do not count as pending work
    assert receiver.requests == []
    status, body, _ = raw("GET", "/_emulator/deliveries")
    assert body["pending"]["held"] == 1
    assert emulator.release() == 1
    emulator.flush()
    assert receiver.types() == ["customer.created"]


def test_duplicate_and_shuffle(emulator, client, receiver):
    emulator.chaos(duplicate=1, shuffle=1)
    for i in range(5):
        client.v1.customers.create({"email": f"c{i}@example.com"})
    emulator.flush()
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) == 10 and len(set(ids)) == 5
    emulator.chaos(reset=1)


def test_delay(emulator, client, receiver):
    emulator.chaos(delay_ms=150)
    started = time.monotonic()
    client.v1.customers.create({"email": "late@example.com"})
    receiver.wait_for("customer.created", timeout=5)
    assert time.monotonic() - started >= 0.14


def test_deliveries_endpoint_waits(emulator, client, raw, receiver):
    client.v1.customers.create({"email": "w@example.com"})
    status, body, _ = raw("GET", "/_emulator/deliveries", {"wait": 1})
    assert status == 200
    assert body["pending"] == {"queued": 0, "held": 0, "in_flight": 0}
    record = body["data"][-1]
    assert record["type"] == "customer.created" and record["status_code"] == 200 and record["attempt"] == 1
    assert record["url"] == receiver.url and record["event_id"].startswith("evt_")


def test_concurrency_delivers_in_parallel(emulator, client):
    """``concurrency=N``: up to N deliveries in flight at once (Stripe sends from many machines)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = {"now": 0, "max": 0, "count": 0}
    lock = threading.Condition()
    hold = 2.0  # each delivery is answered once 4 are in flight, or after this long (a busy machine starts them late)

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
                lock.notify_all()
                lock.wait_for(lambda: state["max"] >= 4, timeout=hold)
                state["now"] -= 1
                state["count"] += 1
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        emulator.add_webhook(f"http://127.0.0.1:{server.server_port}/hook", "whsec_test")
        assert emulator.chaos(concurrency=4)["concurrency"] == 4
        for i in range(8):
            client.v1.customers.create({"email": f"p{i}@example.com"})
        started = time.monotonic()
        emulator.flush()
        assert state["count"] == 8 and state["max"] == 4
        assert time.monotonic() - started < 8 * hold  # not one after the other (each then waits `hold`)
        emulator.chaos(reset=1)
        assert emulator.chaos()["concurrency"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_api_version_is_stamped_on_its_events(emulator, client):
    with WebhookReceiver() as pinned, WebhookReceiver() as unpinned:
        endpoint = client.v1.webhook_endpoints.create(
            {"url": pinned.url, "enabled_events": ["customer.created"], "api_version": "2026-10-28.endive"}
        )
        default = client.v1.webhook_endpoints.create({"url": unpinned.url, "enabled_events": ["customer.created"]})
        assert endpoint.api_version == "2026-10-28.endive"
        assert default.api_version is None  # none asked for: Stripe keeps null and sends the account's version
        pinned.secret, unpinned.secret = endpoint.secret, default.secret
        client.v1.customers.create({"email": "a@example.com"})
        emulator.flush()
        assert [e["api_version"] for e in pinned.events()] == [endpoint.api_version]
        assert [e["api_version"] for e in unpinned.events()] == ["2026-10-28.endive"]


def test_endpoint_with_a_version_the_emulator_cannot_render_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"], "api_version": "2024-06-20"}
        )
    assert exc.value.param == "api_version" and "2026-10-28.endive" in exc.value.user_message


def test_enabled_events_are_the_declared_event_names(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/hook", "enabled_events": ["invoice.paid", "invoice.payed"]}
        )
    assert exc.value.param == "enabled_events[1]" and exc.value.code == "parameter_invalid"
