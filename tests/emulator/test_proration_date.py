"""`proration_date` as Stripe takes it: a preview names the time it prorated at
(`parent.subscription_details.subscription_proration_date`), and an update given that time prorates exactly as the
preview did, however late it comes; a time outside the current period is refused."""

from __future__ import annotations

import pytest
import stripe
from emulator_helpers import subscribe


def upgrade_preview(client, sub, **details):
    return client.v1.invoices.create_preview(
        {
            "customer": sub.customer,
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": sub["items"].data[0].id, "price": "price_pro_monthly"}],
                "proration_behavior": "always_invoice",
                **details,
            },
        }
    )


def test_an_update_at_the_previews_proration_date_invoices_what_the_preview_said(emulator, client):
    sub = subscribe(emulator, client, "price_starter_monthly")
    preview = upgrade_preview(client, sub)
    at = preview.parent.subscription_details.subscription_proration_date
    assert abs(at - emulator.now()) <= 2
    emulator.advance(days=5)
    assert upgrade_preview(client, sub).amount_due < preview.amount_due  # five days less to prorate now
    assert upgrade_preview(client, sub, proration_date=at).amount_due == preview.amount_due
    updated = client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "price": "price_pro_monthly"}],
            "proration_behavior": "always_invoice",
            "proration_date": at,
            "expand": ["latest_invoice"],
        },
    )
    assert updated.latest_invoice.amount_due == preview.amount_due
    # The renewal preview (no change) prorates nothing, and names no proration date.
    renewal = client.v1.invoices.create_preview({"customer": sub.customer, "subscription": sub.id})
    assert renewal.parent.subscription_details.subscription_proration_date is None


def test_a_proration_date_outside_the_current_period_is_refused(emulator, client):
    sub = subscribe(emulator, client, "price_starter_monthly")
    start = sub["items"].data[0].current_period_start
    with pytest.raises(stripe.InvalidRequestError) as refused:
        upgrade_preview(client, sub, proration_date=start - 86400)
    assert refused.value.param == "subscription_details[proration_date]"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.subscriptions.update(
            sub.id,
            {
                "items": [{"id": sub["items"].data[0].id, "price": "price_pro_monthly"}],
                "proration_date": start - 86400,
            },
        )
    assert refused.value.param == "proration_date"
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_starter_monthly"
