"""The billing page asks Stripe once, then shows what it learnt until the next billing commit for the user: a plain
view costs no Stripe call, and what Stripe's events change (a renewal's invoice, a new card) shows at once."""

from __future__ import annotations

import re

from tests.billing.test_billing_states import text_of
from tests.ops.test_six_events_life_cycle import Portal


def stripe_calls(app) -> int:
    return app.extensions["stripe_gateway"].calls


def invoice_rows(page: str) -> int:
    table = page[page.index('data-testid="invoices"') : page.index("</table>", page.index('data-testid="invoices"'))]
    return len(re.findall(r'<td data-label="Date"', table))


def test_a_second_view_asks_stripe_nothing_and_a_renewal_shows_at_once(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("starter", "monthly")
    stripe_emulator.flush()  # the subscription's events have reached the app
    [row] = billing.subscriptions()
    first = billing.client.get("/billing").get_data(as_text=True)
    assert invoice_rows(first) == 1

    before = stripe_calls(billing.app)
    again = billing.client.get("/billing").get_data(as_text=True)
    assert stripe_calls(billing.app) == before  # nothing asked of Stripe
    assert text_of(again) == text_of(first)

    # A month on: Stripe renews and tells the app (invoice.payment_succeeded, customer.subscription.updated).
    stripe_emulator.advance(to=int(row.current_period_end.timestamp()) + 60)
    stripe_emulator.flush()
    renewed = billing.client.get("/billing").get_data(as_text=True)
    assert invoice_rows(renewed) == 2


def test_a_card_changed_in_the_portal_shows_after_its_event(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    assert "•••• 4242" in text_of(billing.client.get("/billing").get_data(as_text=True))
    Portal(stripe_emulator, billing.user().stripe_customer_id).new_card("5555555555554444")  # flushes the events
    page = text_of(billing.client.get("/billing").get_data(as_text=True))
    assert "•••• 4444" in page and "•••• 4242" not in page
