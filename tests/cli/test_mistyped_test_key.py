"""A mistyped test key fails against the emulator as it would on Stripe: the emulator, started with its key, refuses
another with Stripe's 401, and the operator's command names the refused key and its fix."""

from __future__ import annotations

from stripe_emulator.billing import DEFAULT_API_KEY
from stripe_emulator.testing import EmulatorServer


def test_a_mistyped_test_key_is_refused_by_the_emulator(app_with):
    with EmulatorServer() as emulator:  # as `make run` starts it: the app's emulator key only
        mistyped = app_with(STRIPE_API_BASE=emulator.url, STRIPE_SECRET_KEY="sk_test_emulatr")
        result = mistyped.test_cli_runner().invoke(args=["stripe", "portal-config"])
        assert result.exit_code == 1, result.output
        assert (
            f"Error: Stripe at {emulator.url} refused the API key (401: Invalid API Key provided; a sk_test_… key)"
            ": check STRIPE_SECRET_KEY (Stripe Dashboard → Developers → API keys)"
        ) in result.output
        right = app_with(STRIPE_API_BASE=emulator.url, STRIPE_SECRET_KEY=DEFAULT_API_KEY)
        result = right.test_cli_runner().invoke(args=["stripe", "portal-config"])
        # The key is accepted: the command gets as far as the plans, none seeded here (it refuses to leave the
        # portal without plan switching).
        assert "refused the API key" not in result.output
        assert "run `flask seed-plans` first" in result.output, result.output
