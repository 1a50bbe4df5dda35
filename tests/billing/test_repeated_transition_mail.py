"""A transition made again in the same billing period is mailed again: one mail per transition, never two for one.

A cancellation withdrawn (Resume, or a plan change) and then made again, or a scheduled downgrade withdrawn ("Keep")
and then asked for again, is a new transition: the customer's last mail must say what will happen. Before, the
outbox keys named the period end (`sub_…:cancel:<period_end>`, `sub_…:scheduled:<price>:<date>`) and so stopped the
second mail as if it were a redelivery of the first: the inbox said "changes to Starter" while the account went to
Free. A redelivered webhook of either transition, and the app's own change followed by its webhook, still mail once.

The app's pages, the emulator over HTTP delivering its webhooks to the app's real endpoint (redelivered ones signed
and posted again), real PostgreSQL; nothing of ours is mocked."""

from __future__ import annotations

import requests
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, MailOutbox
from app.services.sync import sync_customer
from app.templating import date
from tests.test_sqlite_default import docs_customer_on_sqlite
from tests.webhooks.signing import post_event
from tests.webhooks.test_stripe_docs_events import load


def mails(app) -> list[tuple[str, str]]:
    """(kind, subject) of the subscription mails in the outbox, oldest first (the welcome mails left out)."""
    kinds = ("cancellation_scheduled", "plan_change_scheduled", "subscription_ended", "scheduled_change_applied")
    with app.app_context():
        rows = db.session.execute(
            sa.select(MailOutbox.kind, MailOutbox.subject).where(MailOutbox.kind.in_(kinds)).order_by(MailOutbox.id)
        )
        return [tuple(row) for row in rows]


def audits(app, action: str) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action))


def subscription_events(stripe_emulator, subscription_id: str) -> list[dict]:
    """Every `customer.subscription.*` event of the subscription, as Stripe sends them, oldest first."""
    listed = requests.get(
        f"{stripe_emulator.url}/v1/events",
        params={"limit": 100},
        auth=("sk_test_emulator", ""),
        timeout=10,
    ).json()["data"]
    return sorted(
        (
            e
            for e in listed
            if e["type"].startswith("customer.subscription.") and e["data"]["object"]["id"] == subscription_id
        ),
        key=lambda e: e["created"],
    )


def redeliver_all(billing, stripe_emulator, subscription_id: str) -> None:
    """Every event of the subscription again, signed and posted to the app's endpoint as Stripe's retries would be,
    in their order and then reversed; then a nightly sync."""
    events = subscription_events(stripe_emulator, subscription_id)
    assert events
    secret = billing.app.config["STRIPE_WEBHOOK_SECRET"]
    for event in [*events, *reversed(events)]:
        assert post_event(billing.app.test_client(), event, secret).status_code == 200
    with billing.app.app_context():
        sync_customer(billing.user().stripe_customer_id)


def at_stripe(billing):
    """The customer's subscription as Stripe has it, its schedule expanded."""
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    return billing.emulator.client().v1.subscriptions.retrieve(sub.id, {"expand": ["schedule"]})


def a_moment(stripe_emulator) -> None:
    """Some time between two requests (the steps above are made at an API client's pace: within a second)."""
    stripe_emulator.advance(seconds=2)


def test_cancel_resume_cancel_mails_each_cancellation(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)
    for step in ("/billing/cancel", "/billing/resume", "/billing/cancel"):
        assert billing.post(step).status_code == 303
        stripe_emulator.flush()
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end
    assert at_stripe(billing).cancel_at_period_end  # the second cancellation reached Stripe (not a replayed answer)

    cancellations = [subject for kind, subject in mails(billing.app) if kind == "cancellation_scheduled"]
    assert len(cancellations) == 2, mails(billing.app)
    assert audits(billing.app, "subscription.cancel_scheduled") == 2
    assert ends in cancellations[-1]

    redeliver_all(billing, stripe_emulator, row.stripe_subscription_id)
    assert len([kind for kind, _ in mails(billing.app) if kind == "cancellation_scheduled"]) == 2
    assert audits(billing.app, "subscription.cancel_scheduled") == 2


def test_cancel_then_a_downgrade_then_cancel_again_mails_the_last_cancellation(
    billing, stripe_emulator, webhooks_to_app
):
    """Cancel, switch to Starter (which withdraws the cancellation), cancel again: the last mail says the plan ends
    (Free), not that it becomes Starter."""
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    assert billing.post("/billing/cancel").status_code == 303
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303  # withdraws it
    stripe_emulator.flush()
    assert billing.post("/billing/cancel").status_code == 303
    stripe_emulator.flush()

    sent = mails(billing.app)
    assert [kind for kind, _ in sent] == ["cancellation_scheduled", "plan_change_scheduled", "cancellation_scheduled"]
    assert sent[1][1] == f"Your plan changes to Starter on {date(row.current_period_end)}"
    assert sent[2][1] == f"Your Pro plan will end on {date(row.current_period_end)}"
    assert at_stripe(billing).cancel_at_period_end and at_stripe(billing).schedule is None

    # The downgrade once more (the cancellation released its schedule): a new schedule, mailed again.
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    sent = mails(billing.app)
    assert [kind for kind, _ in sent[3:]] == ["plan_change_scheduled"]

    redeliver_all(billing, stripe_emulator, row.stripe_subscription_id)
    assert mails(billing.app) == sent


def test_a_downgrade_kept_then_asked_for_again_mails_again(billing, stripe_emulator, webhooks_to_app):
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    assert billing.post("/billing/keep").status_code == 303
    stripe_emulator.flush()
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()

    subject = f"Your plan changes to Starter on {date(row.current_period_end)}"
    assert mails(billing.app) == [("plan_change_scheduled", subject)] * 2
    assert at_stripe(billing).schedule.phases[-1]["items"][0].price == "price_starter_monthly"

    a_moment(stripe_emulator)  # asked for once more while it is pending: nothing new to say
    assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
    stripe_emulator.flush()
    redeliver_all(billing, stripe_emulator, row.stripe_subscription_id)
    assert mails(billing.app) == [("plan_change_scheduled", subject)] * 2


def test_a_downgrade_kept_and_asked_for_again_and_again_reaches_stripe_each_time(billing, stripe_emulator):
    """At an API client's pace, within a second: each request after "Keep" is a new one at Stripe (its idempotency key
    names the row's state, which "Keep" changes though no column does), not the first one's answer replayed."""
    billing.subscribe("pro", "monthly")
    for _ in range(3):
        assert billing.post("/billing/change", plan="starter", cycle="monthly").status_code == 303
        assert at_stripe(billing).schedule.phases[-1]["items"][0].price == "price_starter_monthly"
        assert billing.post("/billing/keep").status_code == 303
        assert at_stripe(billing).schedule is None
    assert [kind for kind, _ in mails(billing.app)] == ["plan_change_scheduled"] * 3


def test_cancel_resume_cancel_mails_each_cancellation_on_sqlite(tmp_path):
    """The ORM's writer (SQLite, `make run`): the same keys, each cancellation's mail keyed by its audit entry; the
    events redelivered, shuffled, add none. Stripe's documented event shapes, signed and posted to the endpoint."""
    app, user_id = docs_customer_on_sqlite(tmp_path, "whsec_again")
    created = load("customer.subscription.created", user_id)
    events = [created]
    for n, canceling in enumerate((True, False, True), start=1):
        event = load("customer.subscription.updated", user_id)
        event["id"], event["created"] = f"evt_cancel_{n}", created["created"] + n
        event["data"]["object"]["cancel_at_period_end"] = canceling
        event["data"]["object"]["cancel_at"] = event["data"]["object"]["cancel_at"] if canceling else None
        events.append(event)
    client = app.test_client()
    for event in [*events, *reversed(events), events[1], events[3]]:
        assert post_event(client, event, "whsec_again").status_code == 200
    with app.app_context():
        keys = db.session.scalars(
            sa.select(MailOutbox.dedupe_key).where(MailOutbox.kind == "cancellation_scheduled").order_by(MailOutbox.id)
        ).all()
        entries = db.session.scalars(
            sa.select(AuditLog.id).where(AuditLog.action == "subscription.cancel_scheduled").order_by(AuditLog.id)
        ).all()
        db.session.remove()
        db.engine.dispose()
    assert len(keys) == len(entries) == 2, keys
    assert [key.rsplit("audit-", 1)[1] for key in keys] == [str(entry) for entry in entries]


def test_a_downgrade_replaced_by_another_then_asked_for_again_mails_each(billing, stripe_emulator, webhooks_to_app):
    """Starter monthly, then Starter yearly instead, then Starter monthly again: the last mail says monthly, as the
    schedule does (the app replaced its schedule's phases in place, and the third change found the first's mail)."""
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    for cycle in ("monthly", "yearly", "monthly"):
        assert billing.post("/billing/change", plan="starter", cycle=cycle).status_code == 303
        stripe_emulator.flush()
    assert at_stripe(billing).schedule.phases[-1]["items"][0].price == "price_starter_monthly"

    on = date(row.current_period_end)
    with billing.app.app_context():
        bodies = db.session.scalars(
            sa.select(MailOutbox.body).where(MailOutbox.kind == "plan_change_scheduled").order_by(MailOutbox.id)
        ).all()
    cycles = [" ".join(body.split()).split(" to Starter (", 1)[1].split(")", 1)[0] for body in bodies]
    assert cycles == ["monthly", "yearly", "monthly"], on

    redeliver_all(billing, stripe_emulator, row.stripe_subscription_id)
    assert len(mails(billing.app)) == 3
