"""``python -m stripe_emulator`` as a process: state file, --webhook, --api-key, reset."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import stripe

from stripe_emulator.testing import WebhookReceiver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with _OPENER.open(url + "/_emulator/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def test_command_line(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with WebhookReceiver() as hook:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stripe_emulator",
                "--port",
                str(port),
                "--quiet",
                "--webhook",
                hook.url,
                "--webhook-secret",
                hook.secret,
                "--failed-renewal-outcome",
                "unpaid",
                "--api-key",
                "sk_test_cli",
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": ROOT},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_up(url, proc)
            client = stripe.StripeClient("sk_test_cli", base_addresses={"api": url}, max_network_retries=2)
            cust = client.v1.customers.create({"email": "cli@example.com"})
            hook.wait_for("customer.created")
            assert hook.events()[0]["data"]["object"]["id"] == cust.id  # signature verified by events()
            assert (tmp_path / "instance" / "stripe_emulator.json").exists()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
