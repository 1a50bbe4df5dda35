"""Subscription schedules follow their phases' dates, as Stripe's do, not only the subscription's renewals."""

from __future__ import annotations

import pytest
import stripe
from emulator_helpers import subscribe


def downgrade_schedule(client, sub, to_price="price_starter_monthly"):
    """The app's downgrade at period end: the current phase until the period ends, then the cheaper price."""
    item = sub["items"].data[0]
    schedule = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    return client.v1.subscription_schedules.update(
        schedule.id,
        {
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": item.price.id, "quantity": 1}],
                    "start_date": item.current_period_start,
                    "end_date": item.current_period_end,
                },
                {"items": [{"price": to_price, "quantity": 1}], "proration_behavior": "none"},
            ],
        },
    )


def test_the_next_phase_starts_at_its_date_even_between_renewals(emulator, client, receiver):
    sub = subscribe(emulator, client, "price_pro_monthly")
    schedule = downgrade_schedule(client, sub)
    phase_end = schedule.phases[0].end_date
    # The price changes under the schedule (a yearly upgrade restarts the period): the schedule still applies its
    # next phase when its first phase ends, as Stripe does: a schedule is driven by its phases' dates.
    client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "price": "price_pro_yearly"}],
            "proration_behavior": "always_invoice",
        },
    )
    yearly_end = client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end
    assert yearly_end > phase_end + 300 * 86400

    emulator.advance(to=phase_end + 60)
    after = client.v1.subscriptions.retrieve(sub.id, {"expand": ["schedule"]})
    assert after["items"].data[0].price.id == "price_starter_monthly"
    assert after.schedule.current_phase.start_date == phase_end
    emulator.flush()
    assert "subscription_schedule.updated" in receiver.types()


def test_a_released_schedule_applies_nothing_later(emulator, client):
    sub = subscribe(emulator, client, "price_pro_monthly")
    schedule = downgrade_schedule(client, sub)
    client.v1.subscription_schedules.release(schedule.id)
    emulator.advance(days=35)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_pro_monthly"


def test_cancellation_of_a_subscription_managed_by_a_schedule_is_refused(emulator, client):
    sub = subscribe(emulator, client, "price_pro_monthly")
    schedule = downgrade_schedule(client, sub)
    for params in (
        {"cancel_at_period_end": True},
        {"cancel_at_period_end": False},
        {"cancel_at": sub["items"].data[0].current_period_end},
    ):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.subscriptions.update(sub.id, params)
        assert exc.value.http_status == 400
        assert f"managed by the subscription schedule `{schedule.id}`" in exc.value.user_message
    assert client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False
    client.v1.subscription_schedules.release(schedule.id)
    assert client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True}).cancel_at_period_end is True


def test_a_schedule_in_its_last_phase_can_be_updated_without_its_past_phases(emulator, client):
    sub = subscribe(emulator, client, "price_pro_yearly")
    schedule = downgrade_schedule(client, sub, "price_pro_monthly")
    emulator.advance(to=schedule.phases[0].end_date + 60)
    now = client.v1.subscriptions.retrieve(sub.id)
    item = now["items"].data[0]
    assert item.price.id == "price_pro_monthly"
    # Past phases can be left out; the first phase given is the current one, with its start unchanged.
    updated = client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {
                    "items": [{"price": "price_pro_monthly", "quantity": 1}],
                    "start_date": item.current_period_start,
                    "end_date": item.current_period_end,
                },
                {"items": [{"price": "price_starter_monthly", "quantity": 1}], "proration_behavior": "none"},
            ]
        },
    )
    assert updated.current_phase.start_date == item.current_period_start
    emulator.advance(to=item.current_period_end + 60)
    assert client.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == "price_starter_monthly"


def test_ending_the_subscription_cancels_its_schedule(emulator, client):
    sub = subscribe(emulator, client, "price_pro_monthly")
    schedule = downgrade_schedule(client, sub)
    client.v1.subscriptions.cancel(sub.id)
    assert client.v1.subscription_schedules.retrieve(schedule.id).status == "canceled"
