"""`make run`'s scripts/dev_webhook_endpoint.py, run as run-dev.sh runs it, when Stripe (the emulator) does not answer:
the cause and its fix, as the `flask stripe …` commands say it.

It used to print the customer's "Billing is temporarily unavailable — nothing was charged, please try again."
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.cli.conftest import closed_port
from tests.guide.conftest import ROOT

CUSTOMER_MESSAGE = "Billing is temporarily unavailable"


def test_an_unreachable_stripe_is_named_with_its_address_and_fix():
    base = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "FLASK_"))}
    env.update(ENVIRONMENT="development", STRIPE_API_BASE=base)
    result = subprocess.run(
        [sys.executable, "scripts/dev_webhook_endpoint.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert CUSTOMER_MESSAGE not in result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"could not register the webhook endpoint: Could not reach Stripe at {base}: [Errno 111] Connection refused: "
        "check that this host reaches it (network, proxy, firewall) and STRIPE_API_BASE"
    )
