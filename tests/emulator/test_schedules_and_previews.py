"""Invoice previews and subscription schedules (downgrade at period end), as the app's billing code uses them."""

from __future__ import annotations

from emulator_helpers import subscribe


def test_create_preview_prices_an_upgrade_without_changing_anything(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_starter_monthly")
    emulator.flush()
    seen = len(receiver.requests)
    item = sub["items"].data[0]
    emulator.advance(days=10)
    preview = client.v1.invoices.create_preview(
        {
            "customer": sub.customer,
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": item.id, "price": "price_pro_yearly"}],
                "proration_behavior": "always_invoice",
            },
        }
    )
    assert preview.status == "draft" and preview.id.startswith("upcoming_")
    credit = [line.amount for line in preview.lines.data if line.amount < 0]
    assert credit and preview.amount_due == 47999 + credit[0]
    # Nothing happened for real.
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].price.id == "price_starter_monthly"
    assert len(client.v1.invoices.list({"subscription": sub.id}).data) == 1
    emulator.flush()
    assert len(receiver.requests) == seen
    # Without changes: the next renewal invoice.
    upcoming = client.v1.invoices.create_preview({"customer": sub.customer, "subscription": sub.id})
    assert upcoming.amount_due == 1999 and upcoming.billing_reason == "subscription_cycle"


def test_schedule_downgrades_at_period_end_then_releases(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_pro_monthly")
    item = sub["items"].data[0]
    schedule = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    assert schedule.status == "active" and schedule.subscription == sub.id
    schedule = client.v1.subscription_schedules.update(
        schedule.id,
        {
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": "price_pro_monthly", "quantity": 1}],
                    "start_date": item.current_period_start,
                    "end_date": item.current_period_end,
                },
                {"items": [{"price": "price_starter_monthly", "quantity": 1}], "proration_behavior": "none"},
            ],
        },
    )
    assert schedule.phases[1].start_date == item.current_period_end
    s = client.v1.subscriptions.retrieve(sub.id, {"expand": ["schedule"]})
    assert s.schedule.phases[1]["items"][0].price == "price_starter_monthly"

    emulator.advance(to=item.current_period_end + 60)
    s = client.v1.subscriptions.retrieve(sub.id, {"expand": ["latest_invoice"]})
    assert s["items"].data[0].price.id == "price_starter_monthly"
    assert s.latest_invoice.amount_paid == 1999
    assert s.schedule == schedule.id  # still attached during its last phase

    emulator.advance(days=32)
    s = client.v1.subscriptions.retrieve(sub.id)
    assert s.schedule is None and s.status == "active"
    assert client.v1.subscription_schedules.retrieve(schedule.id).status == "released"
    emulator.flush()
    assert "subscription_schedule.released" in receiver.types()


def test_release_schedule_now(emulator, client):
    sub = subscribe(emulator, client, "price_pro_monthly")
    schedule = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    released = client.v1.subscription_schedules.release(schedule.id)
    assert released.status == "released"
    assert client.v1.subscriptions.retrieve(sub.id).schedule is None


def test_error_if_incomplete_refuses_a_failing_upgrade(emulator, client):
    import pytest
    import stripe

    sub = subscribe(emulator, client, "price_starter_monthly", card="4000000000000341")
    item = sub["items"].data[0]
    with pytest.raises(stripe.CardError) as exc:
        client.v1.subscriptions.update(
            sub.id,
            {
                "items": [{"id": item.id, "price": "price_pro_monthly"}],
                "proration_behavior": "always_invoice",
                "payment_behavior": "error_if_incomplete",
                "metadata": {"note": "x"},
            },
        )
    assert exc.value.http_status == 402 and exc.value.code == "card_declined"
    after = client.v1.subscriptions.retrieve(sub.id)
    assert after["items"].data[0].price.id == "price_starter_monthly" and after.status == "active"
    assert "note" not in after.metadata  # the whole update was refused
    ok = subscribe(emulator, client, "price_starter_monthly")
    upgraded = client.v1.subscriptions.update(
        ok.id,
        {
            "items": [{"id": ok["items"].data[0].id, "price": "price_pro_monthly"}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "error_if_incomplete",
        },
    )
    assert upgraded["items"].data[0].price.id == "price_pro_monthly"
    assert client.v1.invoices.retrieve(upgraded.latest_invoice).status == "paid"
