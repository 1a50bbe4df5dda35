"""§4.2, the subscription flow: the guide's own curl commands, as typed, against the app served over HTTP.

Only the host (`https://api.smartstockbot.app`, which is not this machine) and `<your-jwt-token>` (a token from
`/auth/token`) are filled in; "Complete Checkout" in a browser with 4242 4242 4242 4242 is the emulator paying the
same session. The app runs on the test PostgreSQL and Redis with the emulator delivering signed webhooks to it.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.eventually import eventually
from tests.guide.guide_text import expected, find_guide

GUIDE_HOST = "https://api.smartstockbot.app"
TOKEN = "<your-jwt-token>"


def commands(text: str) -> list[str]:
    """The curl commands of the section, each with its continuation lines, in order (indentation aside)."""
    found: list[list[str]] = []
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("curl "):
            found.append([line])
        elif line and found:
            found[-1].append(line)
    return ["\n".join(lines) for lines in found]


def test_expected_copy_is_the_guides_commands():
    guide = find_guide()
    if guide is None:
        pytest.skip("the deployment guide is not beside this checkout")
    section = guide.read_text(encoding="utf-8").split("### 4.2", 1)[1].split("### 4.3", 1)[0]
    assert commands("\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))) == commands(
        expected("subscription_flow.txt")
    )


def run(command: str, base_url: str, token: str) -> dict:
    """One of the guide's commands in bash, host and token filled in; its JSON answer."""
    typed = command.replace(GUIDE_HOST, base_url).replace(TOKEN, token)
    result = subprocess.run(
        ["bash", "-c", typed + " --silent --show-error"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_guides_subscription_flow(seeded, auth, webhooks_to_app, stripe_emulator):
    checkout, subscription, portal, cancel = commands(expected("subscription_flow.txt"))
    assert auth.signup("guide@example.com").status_code in (302, 303)
    token = (
        seeded.test_client()
        .post("/api/v1/auth/token", json={"email": "guide@example.com", "password": "correct horse"})
        .get_json()["access_token"]
    )
    base = webhooks_to_app.url

    started = run(checkout, base, token)
    assert started["checkout_url"].startswith(stripe_emulator.url)
    stripe_emulator.complete_checkout(started["session_id"])  # "Complete Checkout" with 4242 4242 4242 4242

    assert eventually(lambda: run(subscription, base, token).get("plan") == "pro")
    current = run(subscription, base, token)
    assert (current["plan"], current["billing_cycle"], current["status"]) == ("pro", "monthly", "active")

    assert run(portal, base, token)["portal_url"].startswith(stripe_emulator.url)

    canceled = run(cancel, base, token)
    assert canceled["cancel_at_period_end"] is True
    assert run(subscription, base, token)["cancel_at_period_end"] is True
