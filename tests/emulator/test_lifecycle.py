"""The subscription life cycle through the real stripe library over HTTP, checked by webhooks."""

from __future__ import annotations

import stripe
from emulator_helpers import new_checkout, subscribe

DAY = 86400


def signed_events(receiver) -> list:
    """Events the receiver got, each verified with stripe.Webhook.construct_event."""
    events = []
    for req in receiver.requests:
        event = stripe.Webhook.construct_event(req["body"], req["headers"]["Stripe-Signature"], receiver.secret)
        assert event.api_version == "2026-10-28.endive"
        events.append(event)
    return events


def test_subscribe_swap_cancel_and_end(emulator, client, receiver):
    cust = client.v1.customers.create(
        {"email": "jenny@example.com", "name": "Jenny Rosen"}, {"idempotency_key": "customer-create-1"}
    )
    cs = new_checkout(
        client,
        "price_pro_monthly",
        customer=cust.id,
        client_reference_id="user-1",
        metadata={"user_id": "1"},
        subscription_data={"metadata": {"user_id": "1"}},
    )
    assert cs.status == "open" and cs.url.startswith(emulator.url + "/c/pay/")
    completed = emulator.complete_checkout(cs.id, card="4242 4242 4242 4242")
    assert completed["status"] == "complete" and completed["payment_status"] == "paid"

    cs = client.v1.checkout.sessions.retrieve(cs.id, {"expand": ["subscription", "line_items"]})
    sub = cs.subscription
    assert isinstance(sub, stripe.Subscription)
    assert sub.status == "active" and sub.metadata["user_id"] == "1"
    item = sub["items"].data[0]
    assert item.price.id == "price_pro_monthly"
    start, end = item.current_period_start, item.current_period_end
    assert 28 * DAY <= end - start <= 31 * DAY
    assert cs.line_items.data[0].price.id == "price_pro_monthly"

    # Monthly -> yearly: the interval changes, so Stripe bills at once with a credit for unused time.
    emulator.advance(days=10)
    sub = client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item.id, "price": "price_pro_yearly"}], "proration_behavior": "create_prorations"}
    )
    new_item = sub["items"].data[0]
    assert new_item.id == item.id and new_item.price.id == "price_pro_yearly"
    assert 365 * DAY <= new_item.current_period_end - new_item.current_period_start <= 366 * DAY
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.billing_reason == "subscription_update" and inv.status == "paid"
    credit, charge = inv.lines.data
    assert credit.amount < 0 and credit.parent.subscription_item_details.proration is True
    assert charge.amount == 47999
    assert inv.total == 47999 + credit.amount and inv.amount_paid == inv.total

    sub = client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    assert sub.cancel_at_period_end and sub.cancel_at == new_item.current_period_end
    assert sub.cancellation_details.reason == "cancellation_requested"

    emulator.advance(to=sub.cancel_at + 60)
    emulator.flush()
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled" and sub.ended_at == new_item.current_period_end

    events = signed_events(receiver)
    types = [e.type for e in events]
    assert types == [
        "customer.created",
        # checkout
        "payment_method.attached",
        "customer.updated",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        "checkout.session.completed",
        # swap monthly -> yearly (bills now)
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
        # cancel at period end
        "customer.subscription.updated",
        # a year later
        "customer.subscription.deleted",
    ], types
    swap = events[9]
    assert swap.data.previous_attributes["items"]["data"][0]["price"]["id"] == "price_pro_monthly"
    cancel = events[14]
    assert cancel.data.previous_attributes.to_dict() == {
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"reason": None},
    }
    completed_event = events[8]
    assert completed_event.data.object.client_reference_id == "user-1"
    assert completed_event.data.object.subscription == sub.id
    # Events are retrievable through the API too, identical to what was delivered.
    fetched = client.v1.events.retrieve(completed_event.id)
    assert fetched.to_dict() == completed_event.to_dict()


def test_failing_card_goes_past_due_then_canceled(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_starter_monthly", card="4000000000000341")
    assert sub.status == "active"
    emulator.flush()
    receiver.clear()
    period_end = sub["items"].data[0].current_period_end

    emulator.advance(to=period_end + 60)
    emulator.flush()
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    inv = client.v1.invoices.retrieve(sub.latest_invoice)
    assert inv.status == "open" and inv.billing_reason == "subscription_cycle"
    assert inv.attempt_count == 1 and inv.next_payment_attempt == period_end + 3 * DAY
    assert inv.parent.subscription_details.subscription == sub.id
    types = [e.type for e in signed_events(receiver)]
    assert types == [
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ], types
    failed = signed_events(receiver)[-1]
    assert failed.data.object.status == "past_due"
    assert failed.data.previous_attributes.to_dict() == {"status": "active"}

    # Two more attempts, three days apart, then the subscription is canceled.
    emulator.advance(days=7)
    emulator.flush()
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled" and sub.cancellation_details.reason == "payment_failed"
    types = [e.type for e in signed_events(receiver)]
    assert types.count("invoice.payment_failed") == 3
    assert types[-1] == "customer.subscription.deleted"
    assert client.v1.invoices.retrieve(inv.id).attempt_count == 3


def test_renewal_with_good_card_and_pending_prorations(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_starter_monthly")
    item = sub["items"].data[0]
    emulator.advance(days=15)
    sub = client.v1.subscriptions.update(sub.id, {"items": [{"id": item.id, "price": "price_pro_monthly"}]})
    assert len(list(client.v1.invoices.list({"subscription": sub.id}).data)) == 1  # prorations wait
    emulator.advance(to=item.current_period_end + 1)
    invoices = client.v1.invoices.list({"subscription": sub.id}).data
    renewal = invoices[0]
    assert renewal.billing_reason == "subscription_cycle" and renewal.status == "paid"
    amounts = [line.amount for line in renewal.lines.data]
    assert amounts[-1] == 4999 and amounts[0] < 0 < amounts[1]
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    assert sub["items"].data[0].current_period_start == item.current_period_end


def test_unpaid_outcome_is_configurable(emulator, client):
    emulator.config.failed_renewal_outcome = "unpaid"
    try:
        sub = subscribe(emulator, client, card="4000000000000341")
        emulator.advance(days=45)
        assert client.v1.subscriptions.retrieve(sub.id).status == "unpaid"
    finally:
        emulator.config.failed_renewal_outcome = "canceled"


def test_cancel_now_and_lists(emulator, client):
    sub = subscribe(emulator, client)
    other = subscribe(emulator, client, "price_pro_yearly")
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.ended_at
    cust_subs = client.v1.subscriptions.list({"customer": other.customer})
    assert [s.id for s in cust_subs.data] == [other.id]
    all_subs = client.v1.subscriptions.list({"status": "all"})
    assert {s.id for s in all_subs.data} == {sub.id, other.id}
    assert [s.id for s in client.v1.subscriptions.list({"status": "canceled"}).data] == [sub.id]


def test_checkout_expiry_by_clock_and_api(emulator, client, receiver):
    cs = new_checkout(client)
    expired = client.v1.checkout.sessions.expire(cs.id)
    assert expired.status == "expired" and expired.url is None
    cs2 = new_checkout(client)
    emulator.advance(days=2)
    assert client.v1.checkout.sessions.retrieve(cs2.id).status == "expired"
    emulator.flush()
    assert receiver.types().count("checkout.session.expired") == 2
