"""The reliability test: a realistic history of 120 customers (HISTORY_CUSTOMERS), every event delivered twice,
shuffled, by 8 concurrent senders, to the app's real endpoint — and the database ends exactly where `flask stripe sync --all`
would put it, with one audit entry per transition and at most one mail per transition.

Deployed as on more than one machine: a load balancer sends the deliveries in turn to two app servers (gunicorn,
separate processes), and two queue workers deliver the mail, all on one PostgreSQL and one Redis.

The history, through the app's own services and the emulator (Stripe) like a person and Stripe's portal would:
subscribe by Checkout (1 in 7 with card 4000 0000 0000 0341, which fails at renewal), then upgrade (the app's
`change_plan`), downgrade at period end (a subscription schedule), switch price in the "portal" (the emulator's
`subscriptions.update`, which the app only learns from the webhook), cancel at period end, cancel then resume;
then a month passes (renewals, failed renewals → past_due, scheduled downgrades, ends), half of the failed
customers pay their open invoice (recover), and ten more days pass (Stripe's retries → the rest end).
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, MailOutbox, StripeEvent, User, UserSubscription
from app.services.checkout import start_checkout
from app.services.stripe_admin import create_webhook_endpoint
from app.services.subscriptions import change_plan, set_cancel_at_period_end
from tests.eventually import eventually
from tests.queue.test_worker import start_worker
from tests.reliability.conftest import PASSWORD_HASH, RoundRobin, http

CUSTOMERS = int(os.environ.get("HISTORY_CUSTOMERS", 120))  # every kind of change, on each plan, several times
SENDERS = 8
FAILING_CARD = "4000000000000341"
GOOD_CARD = "4242424242424242"


def plan_of(i: int) -> tuple[str, str]:
    """The plan each customer starts on: mostly monthly (they renew within the test), some yearly."""
    if i % 7 == 0:
        return ("starter", "monthly") if i % 2 else ("pro", "monthly")
    return [
        ("starter", "monthly"),
        ("pro", "monthly"),
        ("starter", "yearly"),
        ("pro", "monthly"),
        ("starter", "monthly"),
    ][i % 5]


def in_app(app, fn):
    """Run `fn` in an app context of its own (one per worker thread), releasing the session after."""

    def run(*args):
        with app.app_context():
            try:
                return fn(*args)
            finally:
                db.session.remove()

    return run


def snapshot_subscriptions(app) -> list[dict]:
    """Every row, field by field, minus the bookkeeping a sync refreshes (`updated_at`, `last_event_at`)."""
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT * FROM user_subscriptions ORDER BY id")).mappings().all()
        return [{k: v for k, v in row.items() if k not in ("updated_at", "last_event_at")} for row in rows]


@pytest.fixture
def two_hosts(seeded, gunicorn, smtp_sink):
    """Two app servers behind a round-robin balancer and two queue workers (mail), stopped at the end."""
    queue = seeded.config["REDIS_URL"]
    # The events applied in the requests (their end state is checked as the last delivery is answered); the
    # workers deliver the mail.
    servers = [gunicorn(workers=1, TASK_QUEUE_URL=queue, WEBHOOK_APPLY="request") for _ in range(2)]
    balancer = RoundRobin([server.url for server in servers])
    workers = [start_worker(seeded.config["DATABASE_URL"], queue, smtp_sink.port) for _ in range(2)]
    yield servers, balancer
    balancer.stop()
    for worker in workers:
        worker.terminate()  # a warm shutdown: the worker finishes its job first
    for worker in workers:
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def test_every_customers_history_twice_shuffled_by_eight_senders(
    seeded, two_hosts, stripe_emulator, smtp_sink, quiet_logs
):
    app, emulator = seeded, stripe_emulator
    servers, balancer = two_hosts
    started = time.monotonic()
    stripe = emulator.client()
    with app.app_context():
        # The endpoint as the operator registers it (`flask stripe webhook-endpoint`): the guide's six events.
        endpoint, _ = create_webhook_endpoint(balancer.url + app.config["API_PREFIX"] + "/billing/webhooks/stripe")
        users = [User(email=f"history{i}@example.com", password_hash=PASSWORD_HASH) for i in range(CUSTOMERS)]
        db.session.add_all(users)
        db.session.commit()
        user_ids = [u.id for u in users]
        db.session.remove()
    app.config["STRIPE_WEBHOOK_SECRET"] = endpoint["secret"]
    for server in servers:
        server.env["STRIPE_WEBHOOK_SECRET"] = endpoint["secret"]
        server.start()
    assert emulator.chaos(duplicate=1, shuffle=1, concurrency=SENDERS)["concurrency"] == SENDERS
    pool = ThreadPoolExecutor(4)

    # --- 1. Subscribe through Checkout -------------------------------------------------------------------------
    def subscribe(i: int) -> None:
        plan, cycle = plan_of(i)
        start = start_checkout(
            user_ids[i],
            plan,
            cycle,
            success_url="http://127.0.0.1/s?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="http://127.0.0.1/pricing",
        )
        emulator.complete_checkout(start.session_id, card=FAILING_CARD if i % 7 == 0 else GOOD_CARD)

    list(pool.map(in_app(app, subscribe), range(CUSTOMERS)))
    emulator.flush(timeout=120)
    subscribed = time.monotonic()

    # --- 2. Changes: upgrade, downgrade at period end, portal switch, cancel, cancel and resume -----------------
    asked = collections.Counter()

    def change(i: int) -> None:
        user = db.session.get(User, user_ids[i])
        plan, cycle = plan_of(i)
        kind = (i // 5) % 9  # independent of the plan, which follows i % 5; 1-4 change something, 0 and 5-8 do not
        if i % 7 == 0:
            kind = 2 if i % 2 else 0  # the failing card cannot pay an upgrade: downgrade or leave it
        if kind == 1 and plan == "starter":
            change_plan(user, "pro", cycle)  # upgrade, now, prorated and invoiced at once
            asked["upgrade"] += 1
        elif kind == 2 and plan == "pro":
            change_plan(user, "starter", "monthly")  # downgrade at the end of the period (schedule)
            asked["downgrade"] += 1
        elif kind == 2:
            set_cancel_at_period_end(user, True)
            asked["cancel"] += 1
        elif kind == 3 and i % 2:
            # The "portal": Stripe changes the price; the app only hears of it through the webhook.
            sub = stripe.v1.subscriptions.list(params={"customer": user.stripe_customer_id}).data[0]
            price = "price_pro_monthly" if plan == "starter" else "price_starter_monthly"
            stripe.v1.subscriptions.update(
                sub.id,
                params={
                    "items": [{"id": sub["items"]["data"][0]["id"], "price": price}],
                    "proration_behavior": "create_prorations",
                },
            )
            asked["portal_switch"] += 1
        elif kind == 4:
            set_cancel_at_period_end(user, True)
            set_cancel_at_period_end(user, False)
            asked["cancel_and_resume"] += 1

    list(pool.map(in_app(app, change), range(CUSTOMERS)))
    emulator.flush(timeout=120)
    changed = time.monotonic()

    # --- 3. A month passes: renewals, failures, downgrades and ends ------------------------------------------
    emulator.advance(days=32)
    emulator.flush(timeout=120)
    open_invoices = [inv for inv in stripe.v1.invoices.list(params={"status": "open", "limit": 100}).auto_paging_iter()]
    assert open_invoices, "the 0341 cards should have failed at renewal"

    # --- 4. Half of them pay the open invoice on the hosted page (recover) -------------------------------------
    def pay(invoice) -> None:
        form = urllib.parse.urlencode({"card_number": GOOD_CARD, "card_expiry": "12 / 34", "card_cvc": "123"})
        status, _, _ = http(
            "POST",
            f"{emulator.url}/i/{invoice.id}/pay",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 303

    recovered = open_invoices[::2]
    list(pool.map(pay, recovered))
    emulator.flush(timeout=120)

    # --- 5. Ten more days: Stripe's retries fail the others, which end ----------------------------------------
    emulator.advance(days=10)
    emulator.flush(timeout=120)
    pool.shutdown()
    delivered = time.monotonic()

    # Every delivery went out twice and ended in a 2xx (retries included).
    deliveries = emulator.deliveries()
    final = {}
    for attempt in deliveries:
        final[(attempt["event_id"], attempt["duplicate"])] = attempt
    assert all(a["ok"] for a in final.values()), [a for a in final.values() if not a["ok"]][:3]
    event_ids = {a["event_id"] for a in deliveries}
    assert len(final) == 2 * len(event_ids)
    assert all(n > len(event_ids) / 2 for n in balancer.counts.values()), balancer.counts  # both hosts took a share

    with app.app_context():
        statuses = dict(
            db.session.execute(sa.select(StripeEvent.status, sa.func.count()).group_by(StripeEvent.status)).all()
        )
        assert set(db.session.scalars(sa.select(StripeEvent.id))) == event_ids
        assert statuses == {"processed": len(event_ids)}

    # --- The database equals what `flask stripe sync --all` makes of the emulator's state -----------------------
    before = snapshot_subscriptions(app)
    assert len(before) == CUSTOMERS
    result = app.test_cli_runner().invoke(args=["stripe", "sync", "--all"])
    assert result.exit_code == 0, result.output
    assert f"Synced {CUSTOMERS} customer(s); 0 had drifted." in result.output, result.output
    assert snapshot_subscriptions(app) == before

    def all_mail_sent() -> bool:  # the queue workers deliver the mail after the responses: wait for the last ones
        with app.app_context():
            statuses = list(db.session.scalars(sa.select(MailOutbox.status)))
            return set(statuses) <= {"sent"} and len(smtp_sink.messages) == len(statuses)

    assert eventually(all_mail_sent, 30)
    with app.app_context():
        audits = db.session.execute(sa.select(AuditLog.user_id, AuditLog.action, AuditLog.details)).all()
        outbox = db.session.execute(sa.select(MailOutbox.user_id, MailOutbox.kind, MailOutbox.status)).all()
        ended = set(
            db.session.scalars(
                sa.select(UserSubscription.stripe_subscription_id).where(UserSubscription.status == "canceled")
            )
        )
        statuses_now = collections.Counter(db.session.scalars(sa.select(UserSubscription.status)))

    # Exactly one audit entry per transition: no entry twice, one activation per subscription, one end per ended one.
    keys = collections.Counter((u, a, repr(sorted(d.items()))) for u, a, d in audits)
    assert [k for k, n in keys.items() if n > 1] == []
    per_sub = collections.defaultdict(collections.Counter)
    for _, action, details in audits:
        if action.startswith("subscription."):
            per_sub[details["subscription"]][action] += 1
    assert len(per_sub) == CUSTOMERS
    assert all(c["subscription.activated"] == 1 for c in per_sub.values())
    assert {s for s, c in per_sub.items() if c["subscription.canceled"]} == ended
    assert all(
        c["subscription.canceled"] <= 1 and c["subscription.cancel_scheduled"] <= 1 and c["subscription.resumed"] <= 1
        for c in per_sub.values()
    )
    assert sum(c["subscription.resumed"] for c in per_sub.values()) == asked["cancel_and_resume"]
    assert sum(c["subscription.plan_changed"] for c in per_sub.values()) == (
        asked["upgrade"] + asked["downgrade"] + asked["portal_switch"]
    )

    # Payments: one audit per paid invoice and per failed attempt, as Stripe reported them.
    stripe_events = list(stripe.v1.events.list(params={"limit": 100}).auto_paging_iter())
    paid = {e.data.object.id for e in stripe_events if e.type == "invoice.payment_succeeded"}
    failed = {
        f"{e.data.object.id}:{e.data.object.attempt_count}" for e in stripe_events if e.type == "invoice.payment_failed"
    }
    assert sorted(d["invoice"] for _, a, d in audits if a == "payment.succeeded") == sorted(paid)
    assert sorted(d["attempt_key"] for _, a, d in audits if a == "payment.failed") == sorted(failed)

    # At most one mail per transition, and every queued mail reached the SMTP sink once.
    assert {status for _, _, status in outbox} == {"sent"}
    assert len(smtp_sink.messages) == len(outbox)
    mails = collections.Counter((u, kind) for u, kind, _ in outbox)
    transitions_of = collections.Counter((u, a) for u, a, _ in audits)
    for (user_id, kind), count in mails.items():
        action = {
            "subscription_activated": "subscription.activated",
            "subscription_ended": "subscription.canceled",
            "cancellation_scheduled": "subscription.cancel_scheduled",
            "payment_failed": "payment.failed",
            "scheduled_change_applied": "subscription.plan_changed",
            "plan_change_scheduled": "subscription.downgrade_scheduled",
        }[kind]
        assert count <= transitions_of[(user_id, action)], (user_id, kind)
    assert sum(n for (_, kind), n in mails.items() if kind == "subscription_activated") == CUSTOMERS
    # A downgrade scheduled for the period end mails once when it applies; a change made now mails nothing.
    applied = sum(n for (_, kind), n in mails.items() if kind == "scheduled_change_applied")
    assert 0 < applied <= asked["downgrade"], (applied, asked)
    # and once when it is asked for (the same change asked again finds its mail)
    scheduled = sum(n for (_, kind), n in mails.items() if kind == "plan_change_scheduled")
    assert 0 < scheduled <= asked["downgrade"], (scheduled, asked)

    finished = time.monotonic()
    print(
        f"\nhistory: {CUSTOMERS} customers, {len(event_ids)} events, {len(deliveries)} deliveries "
        f"({SENDERS} senders, each event twice, shuffled); final statuses {dict(statuses_now)}; "
        f"asked {dict(asked)}, {len(recovered)} recovered of {len(open_invoices)} failed renewals; "
        f"{len(audits)} audit entries, {len(outbox)} mails; subscribe {subscribed - started:.1f}s, "
        f"changes {changed - subscribed:.1f}s, total delivered {delivered - started:.1f}s, "
        f"all {finished - started:.1f}s"
    )
