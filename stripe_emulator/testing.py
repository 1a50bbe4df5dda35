"""Helpers for tests: run the emulator and a webhook receiver in threads.

Typical use (pytest)::

    from stripe_emulator.testing import EmulatorServer, WebhookReceiver

    @pytest.fixture(scope="session")
    def stripe_emulator():
        with EmulatorServer() as emu:          # free port on 127.0.0.1, in-memory state
            yield emu

    def test_x(stripe_emulator):
        stripe_emulator.reset()
        client = stripe_emulator.client()      # stripe.StripeClient pointed at the emulator
        with WebhookReceiver() as hook:        # or point the app's endpoint at it
            stripe_emulator.add_webhook(hook.url, hook.secret)
            ...
            session = stripe_emulator.complete_checkout(cs.id, card="4242424242424242")
            stripe_emulator.flush()            # every queued delivery attempted
            assert [e["type"] for e in hook.events()][-1] == "checkout.session.completed"

``EmulatorServer(state_path=None, *, webhooks=(), public_url=None,
failed_renewal_outcome="canceled", payment_attempts=3, retry_interval_days=3,
webhook_retry_schedule=(0.2, 0.4, 0.8, 1.6), webhook_max_attempts=5,
api_keys=("sk_test_emulator",), any_test_key=False)``

- ``api_keys``: the secret keys the API answers (as ``--api-key``); any other key
  gets Stripe's 401 ``Invalid API Key provided: sk_test_****…``, so a mistyped
  key fails here as on Stripe. ``any_test_key=True`` (``--any-test-key``)
  answers any ``sk_test_…`` key, for a suite that configures several.

- ``.url`` base URL (``http://127.0.0.1:<port>``), ``.emulator`` the in-process
  ``Emulator`` (``.store``, ``.dispatcher``, ``.billing``), ``.start()``,
  ``.stop()``, context manager.
- ``.client(api_key="sk_test_emulator", max_network_retries=2)`` a
  ``stripe.StripeClient`` using the emulator.
- ``.reset()`` wipe state (catalog re-created), delivery log and chaos.
- ``.add_webhook(url, secret)`` deliver every event to url, signed with secret
  (like ``--webhook``); ``.clear_webhooks()``.
- ``.complete_checkout(session_id, card=..., email=None, name=None)`` pay a
  session; returns the session dict; raises ``EmulatorError`` (with ``.status``
  and ``.body``) on a declined card.
- ``.advance(days=0, hours=0, seconds=0, to=None)`` move the clock, run
  renewals/retries/expiries; returns the new emulator time. ``.now()``.
- ``.flush(timeout=30)`` wait until no delivery is queued or in flight.
- ``.deliveries(**filters)`` list of attempt records (event_id, type, url,
  attempt, status_code, ok, error, duplicate, signature, sent_at).
- ``.chaos(duplicate=..., shuffle=..., delay_ms=..., hold=..., fail_first=...,
  concurrency=N)`` (N deliveries in flight at once, default 1) and
  ``.release()`` (deliver held events).

``WebhookReceiver(secret=None, status=200)``: a threaded HTTP server on a free
port that records every POST. ``.url``, ``.secret`` (generated
``whsec_test_...`` if not given), ``.requests`` (list of dicts: body (str),
headers (dict), path, status returned), ``.events()`` (parsed bodies that
verify with ``stripe.Webhook.construct_event``), ``.types()``,
``.wait_for(predicate or event type, timeout=10)``, ``.respond_with(status)``
to answer e.g. 500 for the next requests, ``.clear()``, ``.stop()``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from werkzeug.serving import WSGIRequestHandler, make_server

from .billing import DEFAULT_API_KEY, Config
from .emulator import Emulator
from .server import create_app

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _QuietHandler(WSGIRequestHandler):
    """No access log lines in test output."""

    def log_request(self, *args, **kwargs):
        pass


class EmulatorError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class EmulatorServer:
    def __init__(
        self,
        state_path: str | None = None,
        *,
        webhooks=(),
        public_url: str | None = None,
        failed_renewal_outcome: str = "canceled",
        payment_attempts: int = 3,
        retry_interval_days: int = 3,
        webhook_retry_schedule=(0.2, 0.4, 0.8, 1.6),
        webhook_max_attempts: int = 5,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: tuple[str, ...] = (DEFAULT_API_KEY,),
        any_test_key: bool = False,
    ):
        self.config = Config(
            api_keys=None if any_test_key else tuple(api_keys),
            public_url=public_url,
            failed_renewal_outcome=failed_renewal_outcome,
            payment_attempts=payment_attempts,
            retry_interval_days=retry_interval_days,
            webhooks=list(webhooks),
        )
        self.emulator = Emulator(
            state_path=state_path,
            config=self.config,
            retry_schedule=list(webhook_retry_schedule),
            max_attempts=webhook_max_attempts,
        )
        self.app = create_app(self.emulator)
        self._server = make_server(host, port, self.app, threaded=True, request_handler=_QuietHandler)
        self.host, self.port = host, self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life cycle
    def start(self) -> EmulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ helpers
    def client(self, api_key: str = "sk_test_emulator", max_network_retries: int = 2):
        import stripe

        return stripe.StripeClient(api_key, base_addresses={"api": self.url}, max_network_retries=max_network_retries)

    def call(self, method: str, path: str, data: dict | None = None) -> dict:
        """Call the control API (``/_emulator/...``); raise EmulatorError on non-2xx."""
        body = urllib.parse.urlencode(data or {}).encode() if method != "GET" else None
        url = self.url + path
        if method == "GET" and data:
            url += "?" + urllib.parse.urlencode(data)
        req = urllib.request.Request(url, data=body, method=method)
        try:
            with _OPENER.open(req, timeout=60) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise EmulatorError(exc.code, json.loads(exc.read() or b"{}")) from None

    def reset(self) -> None:
        self.emulator.reset()

    def add_webhook(self, url: str, secret: str) -> None:
        self.config.webhooks.append((url, secret))

    def clear_webhooks(self) -> None:
        self.config.webhooks.clear()

    def complete_checkout(
        self, session_id: str, card: str = "4242424242424242", email: str | None = None, name: str | None = None
    ) -> dict:
        data = {"card": card}
        if email:
            data["email"] = email
        if name:
            data["name"] = name
        return self.call("POST", f"/_emulator/checkout/{session_id}/complete", data)

    def advance(self, days: float = 0, hours: float = 0, seconds: float = 0, to: int | None = None) -> int:
        data = {"to": to} if to is not None else {"days": days, "hours": hours, "seconds": seconds}
        return self.call("POST", "/_emulator/clock/advance", data)["now"]

    def now(self) -> int:
        return self.emulator.store.now()

    def flush(self, timeout: float = 30) -> None:
        if not self.emulator.dispatcher.wait_idle(timeout):
            raise TimeoutError(
                f"webhook deliveries still pending after {timeout}s: {self.emulator.dispatcher.pending()}"
            )

    def deliveries(self, **filters) -> list:
        with self.emulator.dispatcher._cond:
            attempts = list(self.emulator.dispatcher.attempts)
        return [a for a in attempts if all(a.get(k) == v for k, v in filters.items())]

    def chaos(self, **settings) -> dict:
        return self.call("POST", "/_emulator/chaos", {k: int(v) for k, v in settings.items()})

    def release(self) -> int:
        return self.call("POST", "/_emulator/deliveries/release")["released"]


class WebhookReceiver:
    def __init__(self, secret: str | None = None, status: int = 200, host: str = "127.0.0.1"):
        self.secret = secret or "whsec_test_" + secrets.token_hex(16)
        self.status = status
        self.requests: list[dict] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                with receiver._cond:
                    status = receiver.status
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "status": status,
                            "received_at": time.time(),
                        }
                    )
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/webhooks/stripe"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def respond_with(self, status: int) -> None:
        self.status = status

    def clear(self) -> None:
        with self._cond:
            self.requests.clear()

    def events(self, verify: bool = True, only_ok: bool = True) -> list:
        """Bodies received (in arrival order), each checked with ``stripe.Webhook.construct_event``."""
        import stripe

        out = []
        with self._cond:
            reqs = list(self.requests)
        for r in reqs:
            if only_ok and not 200 <= r["status"] < 300:
                continue
            if verify:
                stripe.Webhook.construct_event(r["body"], r["headers"].get("Stripe-Signature", ""), self.secret)
            out.append(json.loads(r["body"]))
        return out

    def types(self) -> list:
        return [e["type"] for e in self.events(verify=False)]

    def wait_for(self, what: str | Callable[[list], bool], timeout: float = 10) -> list:
        """Wait until an event of type ``what`` arrived (or ``what(events)`` is true); return the events."""
        pred = (lambda evs: any(e["type"] == what for e in evs)) if isinstance(what, str) else what
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = [json.loads(r["body"]) for r in self.requests if 200 <= r["status"] < 300]
                if pred(events):
                    return events
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"webhook condition not met; got {[e['type'] for e in events]}")
                self._cond.wait(left)
