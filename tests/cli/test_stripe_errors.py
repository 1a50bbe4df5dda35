"""Every `flask stripe …` command and `flask doctor` name a refused API key or an unreachable Stripe as such.

The commands run on the real app against the emulator over HTTP: a key the emulator does not take gets its 401
(Stripe's authentication error), a closed port gets a refused connection. Operators used to read the customer's
"Billing is temporarily unavailable…" and, from the doctor, a fix telling them to create the catalog.
"""

from __future__ import annotations

import pytest
import stripe

from tests.cli.conftest import closed_port
from tests.factories import UserFactory

#: A live-mode key the emulator (test mode only) refuses with 401, as Stripe refuses a revoked or mistyped key.
WRONG_KEY = "sk_live_" + "Wr0ngKeyWr0ngKey" * 2
CUSTOMER_MESSAGE = "Billing is temporarily unavailable"
WEBHOOK_URL = "https://billing.example.com/api/v1/billing/webhooks/stripe"

#: Every `flask stripe …` command that asks Stripe (replay-events reads our database only).
STRIPE_COMMANDS = [
    ["stripe", "create-catalog"],
    ["stripe", "webhook-endpoint", "--url", WEBHOOK_URL],
    ["stripe", "portal-config"],
    ["stripe", "sync", "--all"],
    ["stripe", "sync", "--user", "linked@example.com"],
    ["stripe", "trigger", "customer.updated"],
]


@pytest.fixture
def linked_user(seeded):
    """A user linked to a Stripe customer, so that `flask stripe sync` has someone to ask Stripe about."""
    with seeded.app_context():
        UserFactory(email="linked@example.com", stripe_customer_id="cus_linked")


def test_the_emulator_refuses_an_unknown_key_as_stripe_does(stripe_emulator):
    """The 401 the tests below rely on: Stripe's `invalid_request_error` body, raised as AuthenticationError."""
    client = stripe.StripeClient(WRONG_KEY, base_addresses={"api": stripe_emulator.url}, max_network_retries=0)
    with pytest.raises(stripe.AuthenticationError) as refused:
        client.v1.prices.list()
    assert refused.value.http_status == 401
    assert refused.value.json_body["error"]["type"] == "invalid_request_error"
    assert refused.value.user_message.startswith("Invalid API Key provided: sk_live_")
    assert WRONG_KEY not in refused.value.user_message  # Stripe masks it


def error_line(result) -> str:
    """The command's one `Error: …` line, after checking it failed without a traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a click error, not an exception escaping
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert CUSTOMER_MESSAGE not in result.output
    return errors[0]


@pytest.mark.parametrize("args", STRIPE_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_a_refused_key_is_named_with_its_fix(app_with, linked_user, stripe_emulator, args):
    app = app_with(STRIPE_API_BASE=stripe_emulator.url, STRIPE_SECRET_KEY=WRONG_KEY)
    result = app.test_cli_runner().invoke(args=args)
    assert error_line(result) == (
        f"Error: Stripe at {stripe_emulator.url} refused the API key (401: Invalid API Key provided; a sk_live_… key)"
        ": check STRIPE_SECRET_KEY (Stripe Dashboard → Developers → API keys)"
    )
    assert WRONG_KEY not in result.output and WRONG_KEY[-4:] not in result.output


@pytest.mark.parametrize("args", STRIPE_COMMANDS, ids=lambda args: " ".join(args[:2]))
def test_an_unreachable_stripe_is_named_with_its_address_and_cause(app_with, linked_user, args):
    base = f"http://127.0.0.1:{closed_port()}"
    app = app_with(STRIPE_API_BASE=base, STRIPE_SECRET_KEY="sk_test_cli0123456789", STRIPE_MAX_NETWORK_RETRIES=0)
    result = app.test_cli_runner().invoke(args=args)
    assert error_line(result) == (
        f"Error: Could not reach Stripe at {base}: [Errno 111] Connection refused: check that this host reaches it "
        "(network, proxy, firewall) and STRIPE_API_BASE"
    )


def stripe_lines(lines: list[str]) -> dict[str, tuple[str, str]]:
    """{title: (line, fix line)} of the doctor's ✗ lines about Stripe."""
    found = {}
    for index, line in enumerate(lines):
        for title in ("Stripe price", "Stripe webhook endpoint", "Customer Portal"):
            if line.startswith(f"✗ {title}"):
                found[line.split(" — ")[0][2:]] = (line, lines[index + 1])
    return found


def test_doctor_names_a_refused_key_and_its_fix_on_every_stripe_line(app_with, seeded, stripe_emulator):
    app = app_with(STRIPE_API_BASE=stripe_emulator.url, STRIPE_SECRET_KEY=WRONG_KEY)
    result = app.test_cli_runner().invoke(args=["doctor"])
    assert result.exit_code == 1
    found = stripe_lines(result.output.splitlines())
    assert sorted(found) == sorted(
        [
            "Stripe price Free monthly",
            "Stripe price Starter monthly",
            "Stripe price Starter yearly",
            "Stripe price Pro monthly",
            "Stripe price Pro yearly",
            "Stripe webhook endpoint",
            "Customer Portal",
        ]
    ), result.output
    refused = f"Stripe at {stripe_emulator.url} refused the API key (401: Invalid API Key provided; a sk_live_… key)"
    assert found["Stripe price Free monthly"][0] == f"✗ Stripe price Free monthly — price_free_monthly: {refused}"
    assert found["Stripe price Pro yearly"][0] == f"✗ Stripe price Pro yearly — price_pro_yearly not checked: {refused}"
    # Refused once: the later checks do not ask again (as the prices after the first already did not).
    assert found["Stripe webhook endpoint"][0] == f"✗ Stripe webhook endpoint — not checked: {refused}"
    assert found["Customer Portal"][0] == f"✗ Customer Portal — not checked: {refused}"
    for _line, fix in found.values():
        assert (
            fix
            == "    fix: check STRIPE_SECRET_KEY (Stripe Dashboard → Developers → API keys), then run `flask doctor` again"
        )
    assert CUSTOMER_MESSAGE not in result.output and "create-catalog" not in result.output
    assert WRONG_KEY not in result.output


def test_doctor_names_an_unreachable_stripe_and_its_fix(app_with, seeded):
    base = f"http://127.0.0.1:{closed_port()}"
    app = app_with(STRIPE_API_BASE=base, STRIPE_SECRET_KEY="sk_test_cli0123456789", STRIPE_MAX_NETWORK_RETRIES=0)
    result = app.test_cli_runner().invoke(args=["doctor"])
    assert result.exit_code == 1
    found = stripe_lines(result.output.splitlines())
    assert len(found) == 7, result.output
    for line, fix in found.values():
        assert f"Could not reach Stripe at {base}: [Errno 111] Connection refused" in line
        assert fix == (
            "    fix: check that this host reaches it (network, proxy, firewall) and STRIPE_API_BASE, then run "
            "`flask doctor` again"
        )
    assert CUSTOMER_MESSAGE not in result.output and "create-catalog" not in result.output


def test_doctor_still_says_create_catalog_for_a_price_stripe_does_not_have(app_with, seeded, stripe_emulator):
    """The catalog fix stays where it is the fix: the key works, the price id is unknown to the account."""
    app = app_with(
        STRIPE_API_BASE=stripe_emulator.url,
        STRIPE_SECRET_KEY="sk_test_cli0123456789",
        STRIPE_PRICE_PRO_YEARLY="price_not_in_this_account",
    )
    with app.app_context():
        app.test_cli_runner().invoke(args=["seed-plans"])
    lines = app.test_cli_runner().invoke(args=["doctor"]).output.splitlines()
    line, fix = stripe_lines(lines)["Stripe price Pro yearly"]
    assert line.startswith(
        "✗ Stripe price Pro yearly — price_not_in_this_account: Stripe refused prices.retrieve (404: "
    )
    assert "No such price" in line
    assert "flask stripe create-catalog" in fix


def test_doctor_asks_an_unreachable_stripe_once(migrated_operator_shell):
    """`flask doctor` as typed in a production shell, Stripe out of reach: the first check that asks waits through
    the client's retries; the webhook endpoint and portal checks after it say "not checked" at once (they used to
    wait through their own retries, ~1.2 s each on a refused port, a minute each where a firewall drops packets)."""
    base = f"http://127.0.0.1:{closed_port()}"
    shell = migrated_operator_shell
    shell.ok("flask seed-plans")
    shell.env["STRIPE_API_BASE"] = base
    result = shell.run("flask doctor")
    assert result.returncode == 1, result.stdout + result.stderr
    found = stripe_lines(result.stdout.splitlines())
    unreachable = f"Could not reach Stripe at {base}: [Errno 111] Connection refused"
    assert found["Stripe price Free monthly"][0].endswith(f"price_1QFreeMonthly000000000: {unreachable}")
    assert found["Stripe webhook endpoint"][0] == f"✗ Stripe webhook endpoint — not checked: {unreachable}"
    assert found["Customer Portal"][0] == f"✗ Customer Portal — not checked: {unreachable}"
    asked = [line for line in result.stderr.splitlines() if '"stripe_api_error"' in line]
    assert len(asked) == 1, result.stderr  # one request made (and logged), not one per check
    # The report alone on stdout (`flask doctor > report.txt`): the log lines, JSON in production, are on stderr.
    assert not [line for line in result.stdout.splitlines() if line.startswith("{") or "Context impl" in line]
