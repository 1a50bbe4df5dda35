"""Fixtures for the emulator's own tests: one emulator per session, wiped before each test."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # pytest's rootdir is not on sys.path without a pythonpath setting
    sys.path.insert(0, ROOT)

from stripe_emulator.billing import DEFAULT_API_KEY  # noqa: E402
from stripe_emulator.testing import EmulatorServer, WebhookReceiver  # noqa: E402

#: The key `Raw` sends.
RAW_KEY = "sk_test_raw"

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def emulator_server():
    # The keys of the stripe library's client (`.client()`) and of `Raw`: any other is refused, as on Stripe.
    with EmulatorServer(webhook_retry_schedule=(0.05, 0.1, 0.2, 0.4), api_keys=(DEFAULT_API_KEY, RAW_KEY)) as server:
        yield server


@pytest.fixture
def emulator(emulator_server):
    emulator_server.reset()
    emulator_server.clear_webhooks()
    yield emulator_server
    emulator_server.clear_webhooks()


@pytest.fixture
def receiver(emulator):
    with WebhookReceiver() as hook:
        emulator.add_webhook(hook.url, hook.secret)
        yield hook


@pytest.fixture
def client(emulator):
    return emulator.client()


class Raw:
    """Plain HTTP access to the emulator, to look at the exact JSON and status codes."""

    def __init__(self, base: str, api_key: str = RAW_KEY):
        self.base = base
        self.api_key = api_key

    def __call__(self, method: str, path: str, params=None, headers=None, auth: bool = True):
        data = None
        url = self.base + path
        pairs = params if isinstance(params, list) else list((params or {}).items())
        if method == "GET" and pairs:
            url += "?" + urllib.parse.urlencode(pairs)
        elif pairs or method == "POST":
            data = urllib.parse.urlencode(pairs).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with _OPENER.open(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read()), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture
def raw(emulator):
    return Raw(emulator.url)


# Chromium launch arguments (Debian /usr/bin/chromium, headless, no sandbox) come from tests/conftest.py.
