"""Waiting for what happens after a response: mail is delivered once the response has gone out (or by a worker)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """True as soon as `condition()` holds, polling for up to `seconds`; its last value otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
