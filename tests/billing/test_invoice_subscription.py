"""An invoice names its subscription under `parent.subscription_details` only (API 2026-10-28): Invoice has no
top-level `subscription` field, and the billing page never reads one."""

from __future__ import annotations

from app.services.billing_summary import invoice_subscription_id


def test_a_top_level_subscription_field_is_not_read():
    assert invoice_subscription_id({"subscription": "sub_from_an_older_api_version", "parent": None}) is None


def test_the_emulators_invoices_have_the_shape_the_app_reads(billing, stripe_emulator):
    billing.subscribe("pro", "monthly")
    customer = billing.user().stripe_customer_id
    [invoice] = stripe_emulator.client().v1.invoices.list(params={"customer": customer}).data
    data = invoice.to_dict()
    assert "subscription" not in data
    [subscription] = billing.stripe_subscriptions(customer)
    assert invoice_subscription_id(data) == subscription.id
