"""`flask doctor`'s webhook self-test is not a delivery: it writes no `stripe_webhook_verified` line.

The guide's §4.3 tells operators to look for `stripe_webhook_verified` to see webhooks arriving; a doctor run
(before every deploy) used to add one for its own self-signed test event.
"""

from __future__ import annotations


def test_the_self_test_verifies_and_logs_no_delivery(migrated_operator_shell, stripe_emulator):
    shell = migrated_operator_shell
    shell.env.update(STRIPE_API_BASE=stripe_emulator.url, STRIPE_SECRET_KEY="sk_test_doctor0123456789")
    result = shell.run("flask doctor")
    assert "Traceback" not in result.stderr
    assert (
        "✓ Webhook signing secret — whsec_ form, and a self-signed test event verifies (1 secret): our check works; "
        "whether Stripe signs with it shows in Webhook signatures"
    ) in result.stdout.splitlines()
    assert "stripe_webhook_verified" not in result.stderr
    assert "evt_doctor_self_test" not in result.stderr


def test_each_configured_secret_is_self_tested(operator_shell, stripe_emulator):
    """While a secret is rolled STRIPE_WEBHOOK_SECRET holds two: each is signed with and verified."""
    operator_shell.env.update(STRIPE_API_BASE=stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_a,whsec_b")
    result = operator_shell.run("flask doctor")
    assert (
        "✓ Webhook signing secret — whsec_ form, and a self-signed test event verifies (2 secrets): our check works; "
        "whether Stripe signs with it shows in Webhook signatures"
    ) in result.stdout.splitlines()
