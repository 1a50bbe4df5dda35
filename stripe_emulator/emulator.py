"""One emulator instance: its state, webhook dispatcher, billing engine and configuration.

Free of Flask: the app factory (``server.create_app``) serves an instance,
``testing.EmulatorServer`` and ``python -m stripe_emulator`` build one.
"""

from __future__ import annotations

import threading

from .billing import Billing, Config
from .store import Store
from .webhooks import Dispatcher


class Emulator:
    """Everything one emulator instance owns: state, webhook dispatcher, engine, config."""

    def __init__(
        self,
        state_path: str | None = None,
        config: Config | None = None,
        retry_schedule: list | None = None,
        max_attempts: int = 5,
    ):
        self.config = config or Config()
        self.store = Store(state_path)
        self.dispatcher = Dispatcher(retry_schedule=retry_schedule or [0.5, 1.0, 2.0, 4.0], max_attempts=max_attempts)
        self.billing = Billing(self.store, self.dispatcher, self.config)
        #: Idempotency records (API key + Idempotency-Key) of the requests being carried out now: another request
        #: with the same key meanwhile gets Stripe's 409 ``idempotency_key_in_use`` (nothing saved, retryable).
        self.in_flight: set[str] = set()
        self.in_flight_lock = threading.Lock()

    def reset(self) -> None:
        """Forget every object and every queued delivery; the catalog comes back."""
        with self.store.lock:
            self.dispatcher.clear()
            self.store.reset()

    def close(self) -> None:
        """Stop the webhook sender threads."""
        self.dispatcher.stop()
