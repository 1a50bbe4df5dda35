"""The emulator answers only the keys it was started with, as Stripe answers only its account's: a mistyped test key
gets Stripe's 401 here, not first on real Stripe. `--any-test-key` (`any_test_key=True`) is the explicit way back to
answering any `sk_test_…` key."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import stripe
from test_cli import _OPENER, ROOT, free_port, wait_up

from stripe_emulator.billing import DEFAULT_API_KEY
from stripe_emulator.testing import EmulatorServer

MINE = "sk_test_51MineMineMineMine0123"
MISTYPED = "sk_test_51MineMineMineMine0124"


def answer(url: str, key: str) -> tuple[int, dict]:
    """The status and JSON of `GET /v1/customers` with `key` as Bearer auth."""
    request = urllib.request.Request(url + "/v1/customers", headers={"Authorization": f"Bearer {key}"})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_another_test_key_gets_stripes_401_with_the_key_masked():
    with EmulatorServer(api_keys=(MINE,)) as emulator:
        assert answer(emulator.url, MINE)[0] == 200
        status, body = answer(emulator.url, MISTYPED)
        assert status == 401
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"] == "Invalid API Key provided: sk_test_" + "*" * 18 + "0124"
        with pytest.raises(stripe.AuthenticationError) as refused:  # as the stripe library sees Stripe's
            emulator.client(MISTYPED, max_network_retries=0).v1.customers.list()
        assert refused.value.http_status == 401 and MISTYPED not in refused.value.user_message


def test_the_default_key_is_the_one_the_app_uses_without_a_stripe_key():
    with EmulatorServer() as emulator:
        assert answer(emulator.url, DEFAULT_API_KEY)[0] == 200
        assert answer(emulator.url, "sk_test_emulatr")[0] == 401
        assert emulator.client().v1.customers.list().data == []


def test_any_test_key_is_an_explicit_option():
    with EmulatorServer(any_test_key=True) as emulator:
        assert answer(emulator.url, MISTYPED)[0] == 200
        assert answer(emulator.url, "sk_live_" + "x" * 24)[0] == 401  # test mode only, as before


def start(tmp_path, *args: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--state", ":memory:", "--quiet", *args],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url, process)
    return url, process


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    process.wait(timeout=10)
    assert process.stderr is not None
    return process.stderr.read()


@pytest.mark.parametrize(
    ("args", "answered", "refused", "keys_line"),
    [
        ((), DEFAULT_API_KEY, "sk_test_emulatr", "API keys: sk_test_****ator"),
        (("--api-key", MINE), MINE, MISTYPED, "API keys: sk_test_" + "*" * 18 + "0123"),
        (("--any-test-key",), MISTYPED, "sk_live_" + "x" * 24, "API keys: any sk_test_ key"),
    ],
    ids=["default", "--api-key", "--any-test-key"],
)
def test_the_command_line_answers_the_keys_it_was_given(tmp_path, args, answered, refused, keys_line):
    url, process = start(tmp_path, *args)
    try:
        assert answer(url, answered)[0] == 200
        assert answer(url, refused)[0] == 401
    finally:
        banner = stop(process)
    assert keys_line in banner, banner  # what it answers, masked as Stripe masks a key


def test_the_command_line_refuses_a_key_that_is_no_test_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stripe_emulator", "--api-key", "pk_test_" + "x" * 24],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--api-key must be a test secret key (sk_test_...), not pk_test_" + "*" * 20 + "xxxx" in done.stderr
