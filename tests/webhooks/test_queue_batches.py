"""WEBHOOK_APPLY=queue: a drain claims the `received` events a batch at a time (one statement) and applies each batch
in one transaction, each event's handler under a savepoint of its own, the batch's users locked first in id order
and its count changes added up at the commit, in key order (migration 0015_drain_batch_counts).

What the batch must not change: each event applied once, oldest first (two events of one customer in one batch
too), one audit entry per transition, at most one mail per transition; a faulty event undoes its own writes alone,
and is kept failed (one attempt, its error) for the replay, as when it had a transaction of its own. And what it must
not add: drains applying batches at once never deadlock.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time

import pytest
import sqlalchemy as sa

from app.extensions import db, task_queue
from app.models import AuditLog, MailOutbox, StripeEvent, User
from app.services import webhooks
from app.services.catalog import seed_plans_from_config
from app.services.signals import subscription_changed
from app.services.webhooks import DRAIN_BATCH, drain_lane
from app.tasks import apply_webhook_events, replay_failed_events
from tests.factories import UserFactory
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import contradicting_event, event, events_in_db, secret
from tests.webhooks.test_queue_mode import billing_emails, customer_events, docs_user, drain, plan_of, queue_mode
from tests.webhooks.test_stripe_docs_events import DOCS_PRICE, load


@contextlib.contextmanager
def drain_statements(app):
    """The drain's claims and commits while the block runs: {"claims": [rows claimed by each], "commits": n}."""
    counted: dict = {"claims": [], "commits": 0}
    with app.app_context():
        engine = db.engine

    def executed(conn, clauseelement, multiparams, params, execution_options, result):
        sql = str(clauseelement)
        if sql.startswith("UPDATE stripe_events SET status =") and not sql.startswith(UNCLAIMED):
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


#: The batch giving claims back (`webhooks.UNCLAIM`): not a claim.
UNCLAIMED = "UPDATE stripe_events SET status = 'received'"


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
        with seeded.app_context():
            task_queue().empty()
            assert webhooks.drain_received(drain_lane(burst[0]["id"])).applied == 9
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
        assert event_counts() == {"failed": 1, "processed": 2}
    assert billing_emails(seeded) == ["new0@example.com", "new1@example.com"]  # the others' writes stand, once each
    # The replay takes it, as it takes a failed event whose transaction was its own (here it fails again).
    with seeded.app_context():
        db.session.execute(
            sa.update(StripeEvent).values(received_at=StripeEvent.received_at - sa.text("'1 hour'::interval"))
        )
        db.session.commit()
        assert replay_failed_events() == 0
        assert event_counts() == {"failed": 1, "processed": 2}
    assert events_in_db(seeded)["evt_bad"] == ("failed", 2)


def event_counts() -> dict[str, int]:
    """stripe_event_counts summed per status (zero rows left out)."""
    rows = db.session.execute(sa.text("SELECT status, sum(events) FROM stripe_event_counts GROUP BY status"))
    return {status: int(total) for status, total in rows if total}


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


def test_a_batch_lost_to_a_failed_flush_is_taken_again_one_event_at_a_time(seeded, client, redis_url, monkeypatch):
    """A handler whose ORM writes fail at the flush (here a CHECK the database refuses): SQLAlchemy rolls the whole
    transaction back, the savepoint with it. The drain then takes the batch's events again, one transaction each —
    the others applied once, the faulty one kept failed with one attempt — then goes on in batches."""
    queue_mode(seeded, redis_url)
    monkeypatch.setattr(webhooks, "DRAIN_BATCH", 3)
    burst = customer_events(seeded, 6)
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
    assert (drained.applied, drained.failed) == (5, 1)
    assert counted["claims"] == [3, 1, 1, 1, 3, 0]  # the batch, lost; each of its events alone; the next batch
    assert counted["commits"] == 4  # the three alone (the faulty one's: its failure recorded), the next batch
    assert events_in_db(seeded) == {
        body["id"]: ("failed", 1) if body is burst[1] else ("processed", 1) for body in burst
    }
    emails = [f"new{n}@example.com" for n in (0, 2, 3, 4, 5)]
    assert billing_emails(seeded) == emails  # each audited once


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


def test_an_event_whose_customer_is_not_linked_is_given_back_and_applied_alone_after_the_batch(
    seeded, client, redis_url
):
    """Its handler would look the user up in Stripe and link it: a lock the batch cannot take in order beforehand.
    The batch gives its claim back (no attempt counted) and the drain applies it in a transaction of its own once
    the batch has committed (here Stripe knows no such customer: it is processed, nothing linked)."""
    queue_mode(seeded, redis_url)
    before, after = customer_events(seeded, 2)
    stranger = event(
        "evt_stranger",
        "invoice.paid",
        obj={"id": "in_stranger", "object": "invoice", "customer": "cus_stranger", "amount_paid": 100},
    )
    for body in (before, stranger, after):
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    with drain_statements(seeded) as counted, seeded.app_context():
        task_queue().empty()
        drained = webhooks.drain_received(drain_lane(before["id"]))
    assert (drained.applied, drained.failed) == (3, 0)
    # The batch (the stranger's claim given back in it), then the stranger alone: two commits.
    assert counted == {"claims": [3, 1, 0], "commits": 2}
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in (before, stranger, after)}
    with seeded.app_context():
        assert event_counts() == {"processed": 3}
    assert billing_emails(seeded) == ["new0@example.com", "new1@example.com"]


def test_a_batch_locks_no_count_row_until_its_commit(seeded):
    """Migration 0015: while a worker's transaction keeps its counts aside, the count rows its writes add to are
    neither written nor locked — another writer adding to the same row does not wait for it — and its COMMIT adds
    them up (no statement of its own): the counts are the same as if each write had added to them itself."""
    with seeded.app_context():
        user_id = UserFactory(email="counted@example.com").id
        engine = db.engine
        db.session.commit()
    activated = {"user_id": user_id, "details": '{"plan": "pro"}'}
    insert_audit = sa.text(
        "INSERT INTO audit_logs (user_id, action, details, created_at) "
        "VALUES (:user_id, 'subscription.activated', CAST(:details AS JSON), now())"
    )
    metric = sa.text("SELECT coalesce(sum(value), 0) FROM daily_counts WHERE metric = 'conversions.free_pro'")
    with engine.connect() as worker, engine.connect() as other:
        assert worker.scalar(sa.text("SELECT batch_counts_begin()")) is True
        worker.execute(insert_audit, activated)
        worker.execute(insert_audit, activated)
        other.execute(sa.text("SET lock_timeout = '2s'"))
        other.execute(insert_audit, activated)  # the same count row: it would wait for the worker's commit
        other.commit()
        assert other.scalar(metric) == 1  # the worker's two not counted yet
        worker.commit()  # which adds the kept changes up
        assert other.scalar(metric) == 3
        kept = worker.scalar(sa.text("SELECT count(*) FROM pg_temp.batch_daily_counts"))
        assert kept == 0  # moved into daily_counts, nothing left for the session's next transaction
        assert worker.scalar(sa.text("SELECT current_setting('app.batch_counts', true)")) in ("", "off")


# --- drains at once: no deadlock -----------------------------------------------------------------------------------

#: 2027-01-01, and a month, as bench/webhook_cpu.py's life cycles.
T0 = 1798761600
MONTH = 31 * 86400


def subscription(n: int, start: int, **extra) -> dict:
    item = {"id": f"si_dl_{n}", "price": {"id": DOCS_PRICE}, "current_period_start": start}
    item["current_period_end"] = start + MONTH
    return {
        "id": f"sub_dl_{n}",
        "object": "subscription",
        "customer": f"cus_dl_{n}",
        "status": "active",
        "items": {"object": "list", "data": [item]},
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "ended_at": None,
        "trial_end": None,
        "cancellation_details": {"reason": None},
        **extra,
    }


def life_cycle(n: int) -> list[dict]:
    """A customer's events, in order, one second apart: activated, paid, cancellation scheduled and resumed, renewed,
    contact changed, ended — each touching count rows (subscriptions per status, conversions, MRR changes, events)."""
    invoice = {
        "id": f"in_dl_{n}",
        "object": "invoice",
        "customer": f"cus_dl_{n}",
        "amount_paid": 4999,
        "currency": "usd",
        "parent": {"subscription_details": {"subscription": f"sub_dl_{n}"}},
    }
    customer = {"id": f"cus_dl_{n}", "object": "customer", "email": f"bill{n}@example.com", "name": f"B{n}"}
    objects = [
        ("customer.subscription.created", subscription(n, T0)),
        ("invoice.paid", invoice),
        ("customer.subscription.updated", subscription(n, T0, cancel_at_period_end=True)),
        ("customer.subscription.updated", subscription(n, T0)),
        ("customer.updated", customer),
        ("customer.subscription.updated", subscription(n, T0 + MONTH)),
        ("customer.subscription.deleted", subscription(n, T0 + MONTH, status="canceled", ended_at=T0 + MONTH)),
    ]
    return [event(f"evt_dl_{n}_{k}", kind, obj, created=T0 + n * 10 + k) for k, (kind, obj) in enumerate(objects)]


#: The audit trail of a `life_cycle` applied in order: one action per event.
LIFE_CYCLE_TRAIL = [
    "subscription.activated",
    "payment.succeeded",
    "subscription.cancel_scheduled",
    "subscription.resumed",
    "customer.email_changed",
    "subscription.updated",
    "subscription.canceled",
]


def deadlocks(app) -> int:
    """PostgreSQL's count of deadlocks detected in the test database, once every session of the app has ended (a
    backend reports its counts when it exits)."""
    with app.app_context():
        db.engine.dispose()
    with app.app_context(), db.engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        return conn.scalar(sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))


@pytest.mark.parametrize("batch", [5, DRAIN_BATCH])
def test_drains_applying_batches_at_once_never_deadlock_and_apply_each_event_once(
    app, client, redis_url, monkeypatch, caplog, batch
):
    """Six drains at once (threads, a session each, real PostgreSQL) over the life cycles of twelve customers,
    received interleaved: every batch holds events of several users, consecutive batches share users, and every
    event adds to the same count rows (today's and T0's). Batches of five make many more batches meet than
    production's twenty. None deadlocks (PostgreSQL counts none; no batch is lost and retried), and each event is
    applied once, each customer's in the order received (every transition audited once, in order), every customer's
    subscription ended, nothing left `received`, the counts equal to what their tables hold."""
    queue_mode(app, redis_url)
    monkeypatch.setattr(webhooks, "DRAIN_BATCH", batch)
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    customers = 12
    with app.app_context():
        seed_plans_from_config()
        users = [UserFactory(email=f"dl{n}@example.com", stripe_customer_id=f"cus_dl_{n}").id for n in range(customers)]
    cycles = [life_cycle(n) for n in range(customers)]
    received = [cycle[k] for k in range(len(cycles[0])) for cycle in cycles]  # step k of every customer, then k + 1
    for body in received:
        assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        task_queue().empty()  # the drains run here, at once
    before = deadlocks(app)
    caplog.set_level(logging.INFO)
    start = threading.Barrier(6)
    results: list[object] = []

    def run_drain(lane: int) -> None:
        try:
            with app.app_context():
                start.wait()
                results.append(webhooks.drain_received(lane))
        except Exception as error:  # pragma: no cover - reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=run_drain, args=(n % 4,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert all(isinstance(result, webhooks.Drained) for result in results), results
    assert sum(result.applied for result in results) == len(received)  # type: ignore[attr-defined]
    assert sum(result.failed for result in results) == 0  # type: ignore[attr-defined]
    assert "stripe_webhook_batch_lost" not in caplog.text
    time.sleep(0.5)
    assert deadlocks(app) == before
    assert events_in_db(app) == {body["id"]: ("processed", 1) for body in received}
    with app.app_context():
        trails = {
            user: list(
                db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user).order_by(AuditLog.id))
            )
            for user in users
        }
        billing = {u.id: u.billing_email for u in db.session.scalars(sa.select(User).where(User.id.in_(users)))}
        assert_counts_match_their_tables()
    # Every transition audited once, in order: two drains may hold two events of one customer at once (the batches
    # overlap), but the newer one is given back until the older one's transaction has ended, so no event is applied
    # after a newer one of its customer (it would be skipped as stale, its transition missing).
    assert trails == {user: LIFE_CYCLE_TRAIL for user in users}
    assert {plan_of(app, user) for user in users} == {("canceled", "pro")}
    assert billing == {user: f"bill{n}@example.com" for n, user in enumerate(users)}


def lock_waiters(engine) -> int:
    """How many sessions of the test database wait for a lock now."""
    with engine.connect() as conn:
        return conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )


def wait_until(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(("others", "holder_wait"), [(0, "10s"), (1, "10s"), (2, "10s"), (1, "50ms")])
def test_a_newer_event_claimed_while_another_drain_holds_an_older_one_of_its_customer_waits_for_it(
    app, client, redis_url, caplog, monkeypatch, others, holder_wait
):
    """Drain A claims an older event of customer X (the cancellation scheduled) and is held between its claim and its
    users' lock (a second connection holds another of its batch's users, locked first: a lower id). Drain B then
    claims X's newer event (the cancellation undone), A's row passed over as locked, with `others` events of other
    customers (B's claim alone, a lone event beside it, a batch beside it). Applied first, X's newer event would leave
    A's older one stale (skipped): the scheduling and its undoing missing from X's audit trail. B applies the others,
    gives X's back (no attempt counted) and waits for A's transaction, then applies it: every transition audited
    once, in order; every event applied once; none left `received`. A wait cut short (`holder_wait`) only sends B
    round again: it claims X's event again, finds it held back again, and waits again."""
    queue_mode(app, redis_url)
    monkeypatch.setattr(webhooks, "HOLDER_WAIT", holder_wait)
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        held = UserFactory(email="dl0@example.com", stripe_customer_id="cus_dl_0").id  # locked first: lower id
        user = UserFactory(email="dl1@example.com", stripe_customer_id="cus_dl_1").id
        engine = db.engine
    others_cycle, mine = life_cycle(0), life_cycle(1)
    for body in (others_cycle[0], mine[0], mine[1]):  # X active and paid, Y active: applied before the race
        assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
    run_drain(app, mine[0]["id"])
    for body in (others_cycle[1], mine[2]):  # A's batch: Y's invoice, X's cancellation scheduled
        assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
    bystanders = customer_events(app, others)
    with app.app_context():
        task_queue().empty()
    caplog.set_level(logging.INFO)
    results: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            with app.app_context():
                results[name] = webhooks.drain_received(0)
        except Exception as error:  # pragma: no cover - reported by the assertion below
            results[name] = error

    with engine.connect() as holder:
        holder.execute(sa.text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": held})
        drain_a = threading.Thread(target=run, args=("a",))
        drain_a.start()
        wait_until(lambda: lock_waiters(engine) == 1)  # A has claimed both, and waits for Y's user
        assert post_event(client, mine[3], secret(app)).get_json()["status"] == "queued"  # X's cancellation undone
        for body in bystanders:
            assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
        drain_b = threading.Thread(target=run, args=("b",))
        drain_b.start()
        # B applies X's newer event at once (X's user is free), or gives it back and waits for A.
        wait_until(lambda: not drain_b.is_alive() or lock_waiters(engine) == 2)
        if holder_wait != "10s":
            time.sleep(0.5)  # B's waits time out, and it goes round
        holder.rollback()
    for thread in (drain_a, drain_b):
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert all(isinstance(result, webhooks.Drained) for result in results.values()), results
    assert sum(result.applied for result in results.values()) == 3 + others  # type: ignore[attr-defined]
    received = [others_cycle[0], others_cycle[1], *mine[:4], *bystanders]
    assert events_in_db(app) == {body["id"]: ("processed", 1) for body in received}
    with app.app_context():
        trail = list(
            db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user).order_by(AuditLog.id))
        )
    assert trail == [
        "subscription.activated",
        "payment.succeeded",
        "subscription.cancel_scheduled",
        "subscription.resumed",
    ]
    assert "stripe_webhook_claims_held_back" in caplog.text
    assert ("stripe_webhook_holder_wait_timed_out" in caplog.text) == (holder_wait != "10s")
    assert billing_emails(app) == [f"new{n}@example.com" for n in range(others)]  # the others', once each


def rows(statement) -> list:
    return list(db.session.execute(statement).tuples())


def assert_counts_match_their_tables() -> None:
    """The kept counts, as the drains' commits added them up, equal to the rows they count."""
    counted = dict(rows(sa.text("SELECT status, sum(events) FROM stripe_event_counts GROUP BY status")))
    stored = dict(rows(sa.text("SELECT status, count(*) FROM stripe_events GROUP BY status")))
    assert {s: int(n) for s, n in counted.items() if n} == stored
    per_status = dict(
        rows(
            sa.text(
                "SELECT substr(metric, 15), sum(value) FROM daily_counts WHERE metric LIKE 'subscriptions.%' GROUP BY 1"
            )
        )
    )
    subscriptions = dict(rows(sa.text("SELECT status, count(*) FROM user_subscriptions GROUP BY 1")))
    assert {s: int(n) for s, n in per_status.items() if n} == subscriptions
    activations = db.session.scalar(
        sa.text(
            "SELECT count(*) FROM audit_logs WHERE action = 'subscription.activated' AND details ->> 'plan' = 'pro'"
        )
    )
    conversions = db.session.scalar(
        sa.text("SELECT coalesce(sum(value), 0) FROM daily_counts WHERE metric = 'conversions.free_pro'")
    )
    assert conversions == activations
    live = db.session.scalar(
        sa.text("SELECT count(*) FROM user_subscriptions WHERE status IN ('trialing', 'active', 'past_due')")
    )
    assert db.session.scalar(sa.text("SELECT coalesce(sum(net), 0) FROM daily_subscription_changes")) == live
