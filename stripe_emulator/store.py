"""State of the emulator: objects, events, idempotency records and the clock.

Everything lives in one JSON-serialisable dict guarded by one re-entrant lock,
so request threads, the webhook thread and the clock never see half-applied
changes. The dict is written to disk (atomically, via a temp file + rename)
after every mutating request so a restarted emulator keeps its customers and
subscriptions.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import string
import tempfile
import threading
import time
from typing import Any

from . import catalog, objects

_ALPHABET = string.ascii_letters + string.digits

# Collections of Stripe objects kept by id, in creation order.
COLLECTIONS = (
    "products",
    "prices",
    "customers",
    "payment_methods",
    "subscriptions",
    "subscription_schedules",
    "invoices",
    "checkout_sessions",
    "portal_sessions",
    "portal_configurations",
    "events",
    "webhook_endpoints",
)


def new_id(prefix: str, length: int = 24) -> str:
    """Stripe-looking random id, e.g. ``cus_Q3x...``."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


class Store:
    """The emulator's whole state plus the lock and the clock.

    ``state["objects"][collection][id]`` holds Stripe-shaped dicts (what the
    API returns, with expandable fields as ids). ``state["internal"]`` keeps
    what Stripe does not show: card behaviour, pending proration items,
    idempotency records, retry schedules.
    """

    def __init__(self, path: str | None = None):
        self.path = path
        self.lock = threading.RLock()
        self.state: dict = {}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                self.state = json.load(fh)
            self._ensure_shape()
            self._hosted_pages_as_paths()
        else:
            self.reset(save=False)

    # ------------------------------------------------------------------ setup
    def _ensure_shape(self) -> None:
        self.state.setdefault("clock_offset", 0)
        objects = self.state.setdefault("objects", {})
        for name in COLLECTIONS:
            objects.setdefault(name, {})
        if not objects["portal_configurations"]:  # a state saved before configurations were kept
            default = catalog.default_portal_configuration(self.now())
            objects["portal_configurations"][default["id"]] = default
        internal = self.state.setdefault("internal", {})
        for name in (
            "cards",
            "pending_items",
            "idempotency",
            "retries",
            "secrets",
            "counters",
            "line_items",
            "sub_data",
        ):
            internal.setdefault(name, {})

    def _hosted_pages_as_paths(self) -> None:
        """A state saved before hosted pages' addresses were kept as paths has them absolute, on the public URL of
        its day: each becomes its path, served on the public URL of now (``objects.public_urls``)."""
        found = self.state["objects"]
        for name in ("invoices", "checkout_sessions", "portal_sessions", "events"):
            for obj in found[name].values():
                objects.stored_paths(obj)

    def reset(self, save: bool = True) -> None:
        """Forget everything, restart the clock at real time, re-create the catalog."""
        with self.lock:
            self.state = {}
            self._ensure_shape()
            for coll, obj in catalog.seed_objects(self.now() - 3600):
                self.put(coll, obj)
            if save:
                self.save()

    def save(self) -> None:
        if not self.path:
            return
        with self.lock:
            data = json.dumps(self.state, separators=(",", ":"))
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".stripe_emulator.")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, self.path)

    # ------------------------------------------------------------------ clock
    def now(self) -> int:
        """Emulator time: real time plus the offset the clock was advanced by."""
        return int(time.time()) + int(self.state.get("clock_offset", 0))

    def set_now(self, when: int) -> None:
        """Move the clock forward to ``when`` (never backward)."""
        with self.lock:
            offset = int(when) - int(time.time())
            if offset > self.state["clock_offset"]:
                self.state["clock_offset"] = offset

    # ---------------------------------------------------------------- objects
    def coll(self, name: str) -> dict:
        return self.state["objects"][name]

    def get(self, name: str, obj_id: Any) -> dict | None:
        if not isinstance(obj_id, str):
            return None
        return self.state["objects"][name].get(obj_id)

    def must(self, name: str, obj_id: Any) -> dict:
        """The object the emulator's own state names (a missing one is a bug of the emulator, not a client's)."""
        obj = self.get(name, obj_id)
        if obj is None:
            raise LookupError(f"the emulator's state has no {name} {obj_id!r}")
        return obj

    def put(self, name: str, obj: dict) -> dict:
        self.state["objects"][name][obj["id"]] = obj
        return obj

    def internal(self, name: str) -> dict:
        return self.state["internal"][name]

    def next_counter(self, name: str) -> int:
        counters = self.internal("counters")
        counters[name] = counters.get(name, 0) + 1
        return counters[name]

    def snapshot(self, obj: dict) -> dict:
        return copy.deepcopy(obj)
