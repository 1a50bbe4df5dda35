"""An upgrade charges the amount its confirmation page showed: the page's preview prorated at a time Stripe names
(`subscription_proration_date`), the form posts it back signed, and the update prorates at it (`proration_date`),
however much later the button is pressed — within the hour; after that, or for another change, the page is shown
again, re-priced, and nothing changes."""

from __future__ import annotations

import html
import re
import time

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from app.extensions import db
from app.models import User
from app.services.subscriptions import change_plan

AMOUNT_DUE = re.compile(r'data-testid="amount-due">\$([0-9,]+)\.([0-9]{2})<')
PRORATION = re.compile(r'name="proration" value="([^"]+)"')


def confirmation(billing, plan="pro", cycle="monthly") -> tuple[int, str]:
    """The confirmation page's amount due (cents) and the token its form posts back."""
    page = billing.client.get(f"/billing/change?plan={plan}&cycle={cycle}").get_data(as_text=True)
    dollars, cents = AMOUNT_DUE.search(page).groups()
    token = PRORATION.search(page)
    assert token, "the confirmation form carries no proration token"
    return int(dollars.replace(",", "")) * 100 + int(cents), html.unescape(token.group(1))


def confirm(billing, token: str | None, plan="pro", cycle="monthly"):
    data = {"plan": plan, "cycle": cycle}
    if token is not None:
        data["proration"] = token
    return billing.post("/billing/change", **data)


def latest_invoice(billing, stripe_emulator):
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    return sub, stripe_emulator.client().v1.invoices.retrieve(sub.latest_invoice)


def test_the_amount_charged_is_the_amount_shown_when_the_button_is_pressed_later(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    shown, token = confirmation(billing)
    assert shown > 0
    stripe_emulator.advance(days=2)  # Stripe's clock moves on before the button is pressed: 2 days less to prorate
    response = confirm(billing, token)
    assert response.status_code == 303 and response.headers["Location"] == "/billing"
    sub, invoice = latest_invoice(billing, stripe_emulator)
    assert sub["items"].data[0].price.id == "price_pro_monthly"
    assert invoice.billing_reason == "subscription_update"
    assert (invoice.amount_due, invoice.status) == (shown, "paid")


def test_the_same_holds_for_a_longer_cycle_which_restarts_the_period(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    shown, token = confirmation(billing, "pro", "yearly")
    stripe_emulator.advance(days=3)
    assert confirm(billing, token, "pro", "yearly").status_code == 303
    sub, invoice = latest_invoice(billing, stripe_emulator)
    assert sub["items"].data[0].price.id == "price_pro_yearly"
    assert invoice.amount_due == shown


def signed_at(billing, payload, when: float) -> str:
    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(when)

    serializer = URLSafeTimedSerializer(billing.app.config["SECRET_KEY"], salt="plan-change-proration", signer=Signer)
    return serializer.dumps(payload)


def assert_priced_again(billing, stripe_emulator, response, plan="pro", cycle="monthly"):
    assert response.status_code == 303
    assert response.headers["Location"] == f"/billing/change?plan={plan}&cycle={cycle}"
    page = billing.client.get(response.headers["Location"]).get_data(as_text=True)
    assert "please confirm it" in page
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    assert sub["items"].data[0].price.id == "price_starter_monthly"  # nothing changed on Stripe
    assert len(stripe_emulator.client().v1.invoices.list(params={"customer": sub.customer}).data) == 1


def test_a_token_over_an_hour_old_or_dated_ahead_prices_the_change_again(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    _, token = confirmation(billing)
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    proration_date = stripe_emulator.now()
    payload = [sub.id, "price_pro_monthly", proration_date]
    for when in (time.time() - 3601, time.time() + 600):
        assert_priced_again(billing, stripe_emulator, confirm(billing, signed_at(billing, payload, when)))


def test_a_forged_or_another_changes_token_prices_the_change_again(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    _, yearly = confirmation(billing, "pro", "yearly")
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    for token in (
        yearly,  # another price's
        signed_at(billing, ["sub_someone_else", "price_pro_monthly", stripe_emulator.now()], time.time()),
        signed_at(billing, [sub.id, "price_pro_monthly", "1700000000"], time.time()),  # not an integer
        "1700000000",  # a bare timestamp, unsigned
        "",
    ):
        assert_priced_again(billing, stripe_emulator, confirm(billing, token))


def test_without_a_token_stripe_prorates_at_the_update_and_the_answer_is_the_invoice_made(billing, stripe_emulator):
    """The API applies a change without a confirmation page: Stripe's own time, and the amount due now is the one
    of the invoice the change made (no second preview)."""
    billing.subscribe("starter", "monthly")
    with billing.app.test_request_context():
        user = db.session.get(User, billing.user().id)
        calls = billing.app.extensions["stripe_gateway"].calls
        change = change_plan(user, "pro", "monthly")
        made = billing.app.extensions["stripe_gateway"].calls - calls
    _, invoice = latest_invoice(billing, stripe_emulator)
    assert change.immediate and change.amount_due_now == invoice.amount_due > 0
    assert made <= 4, made  # the subscription read, the update, the sync's reads: no preview (6 before)


def test_a_preview_from_before_a_renewal_prices_the_change_again(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    _, token = confirmation(billing)
    stripe_emulator.advance(days=32)  # renewed: the preview's time is in the period before
    response = confirm(billing, token)
    assert response.headers["Location"] == "/billing/change?plan=pro&cycle=monthly"
    assert "renewed since" in billing.client.get(response.headers["Location"]).get_data(as_text=True)
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    assert sub["items"].data[0].price.id == "price_starter_monthly"
    shown, token = confirmation(billing)  # priced again: this one is charged as shown
    assert confirm(billing, token).headers["Location"] == "/billing"
    assert latest_invoice(billing, stripe_emulator)[1].amount_due == shown
