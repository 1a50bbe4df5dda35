"""Dunning mail says what Stripe will really do: retry (and the plan stays) only while it will, never after the end.

The emulator renews with a card that fails every later charge (4000 0000 0000 0341), retries every 3 days, gives up
after the 3rd attempt and ends the subscription (or leaves it `unpaid`); its events reach the app's real endpoint.
"""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import MailOutbox
from tests.eventually import eventually
from tests.webhooks.test_emulator_events import state, subscribe

FAILING_CARD = "4000000000000341"


def outbox(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [
            (m.kind, m.dedupe_key, m.body) for m in db.session.scalars(sa.select(MailOutbox).order_by(MailOutbox.id))
        ]


def payment_mails(app) -> dict[int, str]:
    """The payment_failed mails by attempt number."""
    return {int(key.rsplit(":", 1)[1]): body for kind, key, body in outbox(app) if kind == "payment_failed"}


def test_retries_then_the_end_each_mail_says_what_happens(seeded, stripe_emulator, webhooks_to_app, smtp_sink):
    user_id = subscribe(seeded, stripe_emulator, card=FAILING_CARD, plan="starter")
    for days in (31, 3, 3):  # the renewal fails, then Stripe's two retries fail, one at a time
        stripe_emulator.advance(days=days)
        stripe_emulator.flush()
    _, rows, _, _ = state(seeded, user_id)
    assert rows == [("starter", "canceled", False)]

    mails = payment_mails(seeded)
    assert sorted(mails) == [1, 2]  # the last attempt has no mail of its own: the plan-ended mail tells it
    for attempt in (1, 2):
        assert "Stripe will try again on " in mails[attempt] and "you keep your plan" in mails[attempt]
    kinds = [kind for kind, _, _ in outbox(seeded)]
    assert kinds == ["subscription_activated", "payment_failed", "payment_failed", "subscription_ended"]
    ended = next(body for kind, _, body in outbox(seeded) if kind == "subscription_ended")
    assert "could not collect your payment" in ended and "will try again" not in ended
    assert eventually(lambda: len(smtp_sink.subjects("trader@example.com")) == 4)


def test_the_testers_run_no_retry_mail_after_the_plan_has_ended(seeded, stripe_emulator, webhooks_to_app):
    """31 days, then 10 at once: attempts 2 and 3 are reported after Stripe has already ended the subscription."""
    user_id = subscribe(seeded, stripe_emulator, card=FAILING_CARD, plan="starter")
    stripe_emulator.advance(days=31)
    stripe_emulator.flush()
    stripe_emulator.advance(days=10)
    stripe_emulator.flush()
    _, rows, _, _ = state(seeded, user_id)
    assert rows == [("starter", "canceled", False)]
    mails = outbox(seeded)
    ended_at = [kind for kind, _, _ in mails].index("subscription_ended")
    assert [m for m in mails[ended_at + 1 :] if "will try again" in m[2]] == []
    assert 3 not in payment_mails(seeded)
    assert "you keep your plan" in payment_mails(seeded)[1]


@pytest.fixture
def unpaid_after_retries(stripe_emulator):
    """Stripe set to leave the subscription `unpaid` (not canceled) once the retries are over."""
    stripe_emulator.config.failed_renewal_outcome = "unpaid"
    yield stripe_emulator
    stripe_emulator.config.failed_renewal_outcome = "canceled"


def test_retries_over_but_not_canceled_the_last_mail_says_so(seeded, unpaid_after_retries, webhooks_to_app):
    emulator = unpaid_after_retries
    user_id = subscribe(seeded, emulator, card=FAILING_CARD, plan="starter")
    for days in (31, 3, 3):
        emulator.advance(days=days)
        emulator.flush()
    _, rows, _, _ = state(seeded, user_id)
    assert rows == [("starter", "unpaid", False)]
    mails = payment_mails(seeded)
    assert sorted(mails) == [1, 2, 3]
    last = mails[3]
    assert "will try again" not in last and "keep your plan" not in last
    assert "Stripe will not try again" in last and "pay the open invoice" in last
    assert "Free plan's features until the invoice is paid" in last  # `unpaid` grants no access
