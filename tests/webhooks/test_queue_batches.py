"""WEBHOOK_APPLY=queue: a drain claims the `received` events a batch at a time (one statement) and applies each batch
in one transaction, each event's handler under a savepoint of its own.

What the batch must not change: each event applied once, oldest first (two events of one customer in one batch
too), one audit entry per transition, at most one mail per transition; a faulty event undoes its own writes alone,
and is kept failed (one attempt, its error) for the replay, as when it had a transaction of its own.
"""

from __future__ import annotations

import contextlib
import copy

import sqlalchemy as sa

from app.extensions import db, task_queue
from app.models import AuditLog, MailOutbox, StripeEvent
from app.services import webhooks
from app.services.signals import subscription_changed
from app.services.webhooks import DRAIN_BATCH, drain_lane
from app.tasks import apply_webhook_events, replay_failed_events
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import contradicting_event, events_in_db, secret
from tests.webhooks.test_queue_mode import billing_emails, customer_events, docs_user, drain, plan_of, queue_mode
from tests.webhooks.test_stripe_docs_events import load


@contextlib.contextmanager
def drain_statements(app):
    """The drain's claims and commits while the block runs: {"claims": [rows claimed by each], "commits": n}."""
    counted: dict = {"claims": [], "commits": 0}
    with app.app_context():
        engine = db.engine

    def executed(conn, clauseelement, multiparams, params, execution_options, result):
        if str(clauseelement).startswith("UPDATE stripe_events SET status = CASE"):
            counted["claims"].append(result.rowcount)

    def committed(conn):
        counted["commits"] += 1

    sa.event.listen(engine, "after_execute", executed)
    sa.event.listen(engine, "commit", committed)
    try:
        yield counted
    finally:
        sa.event.remove(engine, "after_execute", executed)
        sa.event.remove(engine, "commit", committed)


def run_drain(app, event_id: str) -> int:
    """Run the drain of the event's lane here (the burst's queued drains dropped): how many it applied."""
    with app.app_context():
        task_queue().empty()
        return apply_webhook_events(drain_lane(event_id))


def test_a_drain_claims_a_burst_in_one_statement_and_commits_it_once(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 6)
    for body in burst:
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    with drain_statements(seeded) as counted:
        assert run_drain(seeded, burst[0]["id"]) == 6
    # One claim of the six, one finding none; one commit (one per event before: six claims, six commits).
    assert counted == {"claims": [6, 0], "commits": 1}
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
    assert billing_emails(seeded) == sorted(f"new{n}@example.com" for n in range(6))  # each audited once


def test_a_drain_takes_at_most_a_batch_per_transaction(seeded, client, redis_url, monkeypatch):
    queue_mode(seeded, redis_url)
    monkeypatch.setattr(webhooks, "DRAIN_BATCH", 4)  # 20 in production
    burst = customer_events(seeded, 9)
    for body in burst:
        post_event(client, body, secret(seeded))
    with drain_statements(seeded) as counted:
        assert run_drain(seeded, burst[0]["id"]) == 9
    assert counted == {"claims": [4, 4, 1, 0], "commits": 3}
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
    assert DRAIN_BATCH < 64  # more savepoints that wrote would overflow PostgreSQL's per-backend subtransaction cache


def test_a_faulty_event_in_a_batch_undoes_its_own_writes_alone_and_is_kept_failed(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    bad = contradicting_event(seeded)
    before, after = customer_events(seeded, 2)
    for body in (before, bad, after):  # received in this order: the bad one in the middle of the batch
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    with drain_statements(seeded) as counted:
        with seeded.app_context():
            task_queue().empty()
            drained = webhooks.drain_received(drain_lane(before["id"]))
    assert (drained.applied, drained.failed) == (2, 1)
    assert counted == {"claims": [3, 0], "commits": 1}  # one transaction for the three
    assert events_in_db(seeded) == {
        before["id"]: ("processed", 1),
        "evt_bad": ("failed", 1),
        after["id"]: ("processed", 1),
    }
    with seeded.app_context():
        failed = db.session.get(StripeEvent, "evt_bad")
        assert (failed.processed_at, failed.error) == (
            None,
            "ValueError: subscription sub_shared belongs to another user",
        )
        # The bad event's handler wrote nothing that stayed: the owner's subscription is as it was.
        assert db.session.scalar(sa.text("SELECT status FROM user_subscriptions")) == "active"
    assert billing_emails(seeded) == ["new0@example.com", "new1@example.com"]  # the others' writes stand, once each
    # The replay takes it, as it takes a failed event whose transaction was its own (here it fails again).
    with seeded.app_context():
        db.session.execute(
            sa.update(StripeEvent).values(received_at=StripeEvent.received_at - sa.text("'1 hour'::interval"))
        )
        db.session.commit()
        assert replay_failed_events() == 0
    assert events_in_db(seeded)["evt_bad"] == ("failed", 2)


def test_two_events_of_one_customer_in_one_batch_are_applied_oldest_first(app, client, redis_url, smtp_sink):
    """The claim's rows come back in no set order (here, the table's: the earlier event's row rewritten after both
    were recorded lies after the later one's): the drain applies them as received, so the subscription is
    activated, then its cancellation scheduled — one audit entry and at most one mail per transition."""
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = {**load("customer.subscription.created", user_id), "id": "evt_z_created"}
    scheduled = copy.deepcopy(created)
    scheduled.update(id="evt_a_scheduled", type="customer.subscription.updated", created=created["created"] + 1)
    scheduled["data"]["object"]["cancel_at_period_end"] = True
    for body in (created, scheduled):
        assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        db.session.execute(sa.text("UPDATE stripe_events SET received_at = received_at WHERE id = 'evt_z_created'"))
        db.session.commit()
    with drain_statements(app) as counted:
        drain(app)
    assert counted["claims"][0] == 2  # both in one batch
    assert events_in_db(app) == {"evt_z_created": ("processed", 1), "evt_a_scheduled": ("processed", 1)}
    assert plan_of(app, user_id) == ("active", "pro")
    with app.app_context():
        actions = list(db.session.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))
        mails = list(db.session.scalars(sa.select(MailOutbox.kind).order_by(MailOutbox.id)))
    assert actions == ["subscription.activated", "subscription.cancel_scheduled"]
    assert len(mails) == len(set(mails)) == 2


def test_a_batch_lost_to_a_failed_flush_is_taken_again_one_event_at_a_time(seeded, client, redis_url):
    """A handler whose ORM writes fail at the flush (here a CHECK the database refuses): SQLAlchemy rolls the whole
    transaction back, the savepoint with it. The drain then takes the batch's events again, one transaction each:
    the others applied once, the faulty one kept failed with one attempt."""
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 3)
    burst[1]["data"]["object"]["email"] = "refused@example.com"
    for body in burst:
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    with seeded.app_context():
        db.session.execute(
            sa.text(
                "ALTER TABLE users ADD CONSTRAINT test_refused_email "
                "CHECK (billing_email IS DISTINCT FROM 'refused@example.com') NOT VALID"
            )
        )
        db.session.commit()
    try:
        with drain_statements(seeded) as counted, seeded.app_context():
            task_queue().empty()
            drained = webhooks.drain_received(drain_lane(burst[0]["id"]))
    finally:
        with seeded.app_context():
            db.session.execute(sa.text("ALTER TABLE users DROP CONSTRAINT test_refused_email"))
            db.session.commit()
    assert (drained.applied, drained.failed) == (2, 1)
    assert counted["claims"] == [3, 1, 1, 1, 0]  # the batch, lost; then each event alone
    assert events_in_db(seeded) == {
        burst[0]["id"]: ("processed", 1),
        burst[1]["id"]: ("failed", 1),
        burst[2]["id"]: ("processed", 1),
    }
    assert billing_emails(seeded) == ["new0@example.com", "new2@example.com"]  # each audited once


def test_a_receivers_fault_after_the_batchs_commit_leaves_every_event_applied_and_the_others_announced(
    seeded, client, redis_url
):
    """As with a transaction per event: a receiver failing after the commit leaves its event processed (counted as
    failed, so the drain's job fails), and the batch's later events are still announced."""
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 3)
    for body in burst:
        post_event(client, body, secret(seeded))
    with seeded.app_context():
        users = [db.session.scalar(sa.text(f"SELECT id FROM users WHERE email = 'c{n}@example.com'")) for n in range(3)]
    announced: list[int] = []

    def failing(sender, change, writes):
        announced.append(change.user_id)
        if change.user_id == users[1]:
            raise RuntimeError("a receiver's fault")

    subscription_changed.connect(failing)
    try:
        with seeded.app_context():
            task_queue().empty()
            drained = webhooks.drain_received(drain_lane(burst[0]["id"]))
    finally:
        subscription_changed.disconnect(failing)
    assert (drained.applied, drained.failed) == (2, 1)
    assert announced == users
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
