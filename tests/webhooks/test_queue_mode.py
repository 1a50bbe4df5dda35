"""WEBHOOK_APPLY=queue: the endpoint records the event `received` and answers `queued`; a worker's drain applies it.

A delivery enqueues its lane's drain (`app.tasks.apply_webhook_events`) only when no drain of the lane is pending
(the `webhook_drain_pending:<lane>` flag); a drain applies every `received` event, oldest first, each claimed with
SKIP LOCKED.

The worker is RQ's SimpleWorker in burst mode on the suite's Redis, in this process (as `flask queue worker --burst`
runs it: jobs in app contexts of the app); tests/queue/test_two_hosts.py runs real `flask queue worker` processes.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import redis
import sqlalchemy as sa
from rq import SimpleWorker

from app.extensions import db, task_queue
from app.models import AuditLog, MailOutbox, StripeEvent, User, UserSubscription, utcnow
from app.services import webhooks
from app.services.catalog import seed_plans_from_config
from app.services.signals import subscription_changed
from app.services.webhooks import DRAIN_PENDING_KEY, DRAIN_PENDING_TTL, LANES, drain_lane
from app.tasks import apply_webhook_events, replay_failed_events
from tests.factories import UserFactory
from tests.queue.test_worker import free_port
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import URL, contradicting_event, event, events_in_db, secret
from tests.webhooks.test_stripe_docs_events import CUSTOMER, DOCS_PRICE, load


def queue_mode(app, redis_url: str, queue_url: str | None = None):
    """The app in queue mode, its task queue on the suite's Redis (or `queue_url`), emptied."""
    app.config.update(WEBHOOK_APPLY="queue", TASK_QUEUE_URL=queue_url or redis_url)
    if queue_url is None:
        with app.app_context():
            task_queue().empty()
    return app


DRAIN = "app.tasks.apply_webhook_events"


def queued_jobs(app) -> list[tuple[str, tuple]]:
    with app.app_context():
        return [(job.func_name, job.args) for job in task_queue().get_jobs()]


def drains(event_ids) -> list[tuple[str, tuple]]:
    """The drain jobs a burst of these events enqueues: one per lane, in the order of each lane's first event."""
    lanes = dict.fromkeys(drain_lane(event_id) for event_id in event_ids)
    return [(DRAIN, (lane,)) for lane in lanes]


def in_lane(lane: int, prefix: str = "evt_lane") -> str:
    """An event id whose drain lane is `lane`."""
    return next(f"{prefix}_{n}" for n in range(1000) if drain_lane(f"{prefix}_{n}") == lane)


def drain(app) -> None:
    """Run every queued job, then stop (`flask queue worker --burst`), the jobs it enqueues (mail) included."""
    with app.app_context():
        queue = task_queue()
        SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")


def failed_jobs(app) -> int:
    with app.app_context():
        return task_queue().failed_job_registry.count


def docs_user(app) -> int:
    app.config["STRIPE_PRICE_PRO_MONTHLY"] = DOCS_PRICE
    with app.app_context():
        seed_plans_from_config()
        return UserFactory(email="jennyrosen@example.com", stripe_customer_id=CUSTOMER).id


def plan_of(app, user_id: int) -> tuple[str, str] | None:
    with app.app_context():
        row = db.session.scalar(sa.select(UserSubscription).where(UserSubscription.user_id == user_id))
        return row and (row.status, row.plan.name)


def test_a_queued_event_is_received_until_the_worker_applies_it_then_a_duplicate(app, client, redis_url, smtp_sink):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    response = post_event(client, created, secret(app))
    assert (response.status_code, response.get_json()) == (200, {"status": "queued", "event_id": created["id"]})
    assert events_in_db(app) == {created["id"]: ("received", 0)}
    assert plan_of(app, user_id) is None  # nothing applied in the request
    assert queued_jobs(app) == drains([created["id"]])

    drain(app)
    assert events_in_db(app) == {created["id"]: ("processed", 1)}
    assert plan_of(app, user_id) == ("active", "pro")
    with app.app_context():
        assert list(db.session.scalars(sa.select(AuditLog.action))) == ["subscription.activated"]
        assert list(db.session.scalars(sa.select(MailOutbox.status))) == ["sent"]  # the worker ran its delivery job
        assert db.session.scalar(sa.select(StripeEvent.processed_at)) is not None
    assert smtp_sink.subjects("jennyrosen@example.com") == ["Welcome to Smart Strategies Builder Pro"]
    # No `webhook_processed` mark: queue mode never reads it (the insert tells a known event).
    assert not redis.Redis.from_url(redis_url).exists(f"webhook_processed:{created['id']}")
    assert failed_jobs(app) == 0

    again = post_event(client, created, secret(app))
    assert again.get_json() == {"status": "duplicate", "event_id": created["id"]}
    assert queued_jobs(app) == []
    app.config["WEBHOOK_APPLY"] = "request"  # switched back: the table decides, and request mode marks it now
    assert post_event(client, created, secret(app)).get_json()["status"] == "duplicate"
    assert redis.Redis.from_url(redis_url).exists(f"webhook_processed:{created['id']}")
    assert queued_jobs(app) == []
    assert events_in_db(app) == {created["id"]: ("processed", 1)}
    with app.app_context():
        assert list(db.session.scalars(sa.select(AuditLog.action))) == ["subscription.activated"]


def test_a_redelivery_before_the_worker_ran_is_queued_again_and_applied_once(app, client, redis_url, smtp_sink):
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    statuses = [post_event(client, created, secret(app)).get_json()["status"] for _ in range(2)]
    assert statuses == ["queued", "queued"]
    assert queued_jobs(app) == drains([created["id"]])  # the lane's drain is pending: no second job
    redis.Redis.from_url(redis_url).delete(DRAIN_PENDING_KEY.format(drain_lane(created["id"])))  # as if it expired
    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    assert len(queued_jobs(app)) == 2  # the second drain: in case the first was lost
    drain(app)
    assert events_in_db(app) == {created["id"]: ("processed", 1)}  # the second drain found nothing to claim
    with app.app_context():
        assert list(db.session.scalars(sa.select(AuditLog.action))) == ["subscription.activated"]
        assert list(db.session.scalars(sa.select(MailOutbox.kind))) == ["subscription_activated"]
    assert smtp_sink.subjects("jennyrosen@example.com") == ["Welcome to Smart Strategies Builder Pro"]
    assert failed_jobs(app) == 0


def test_a_handler_fault_fails_the_job_keeps_the_event_failed_and_the_replay_applies_it(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    body = contradicting_event(seeded)
    response = post_event(client, body, secret(seeded))
    assert (response.status_code, response.get_json()["status"]) == (200, "queued")  # stored: Stripe is done
    drain(seeded)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 1)}
    assert failed_jobs(seeded) == 1
    with seeded.app_context():
        assert "belongs to another user" in db.session.scalar(sa.select(StripeEvent.error))
        assert db.session.scalar(sa.select(UserSubscription.status)) == "active"  # rolled back: nothing partial
        # A redelivery (Stripe's dashboard) enqueues a job for it alone (drains leave failed events to the replay).
    assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    assert queued_jobs(seeded) == [("app.tasks.apply_webhook_event", ("evt_bad", body["type"]))]
    drain(seeded)
    assert events_in_db(seeded) == {"evt_bad": ("failed", 2)}
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = NULL WHERE email = 'intruder@example.com'"))
        db.session.execute(
            sa.text("UPDATE users SET stripe_customer_id = 'cus_intruder' WHERE email = 'owner@example.com'")
        )
        db.session.commit()
        assert replay_failed_events() == 0  # its backoff (15 min after its receipt, at 2 attempts) has not passed
        db.session.execute(
            sa.update(StripeEvent)
            .values(received_at=utcnow() - timedelta(minutes=16))
            .where(StripeEvent.id == "evt_bad")
        )
        db.session.commit()
        assert replay_failed_events() == 1
    assert events_in_db(seeded) == {"evt_bad": ("processed", 3)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(StripeEvent.error)) is None
        assert db.session.scalar(sa.select(UserSubscription.status)) == "canceled"


def test_a_received_event_whose_drain_was_lost_is_applied_by_the_replay_after_a_minute(app, client, redis_url):
    """The drain lost with its flag still set (its job gone, say a worker killed before it started): the lane's
    next events enqueue none until the flag expires (30 s), and the replay applies what waited over a minute."""
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    lane = drain_lane(created["id"])
    with app.app_context():
        task_queue().empty()  # the drain is lost; its flag is still set
    flag = DRAIN_PENDING_KEY.format(lane)
    assert 0 < redis.Redis.from_url(redis_url).ttl(flag) <= DRAIN_PENDING_TTL  # it expires on its own
    later = event(in_lane(lane), obj={"id": "cus_other", "object": "customer", "email": "o@example.com", "name": "O"})
    assert post_event(client, later, secret(app)).get_json()["status"] == "queued"
    assert queued_jobs(app) == []  # the flag says a drain is pending
    with app.app_context():
        assert replay_failed_events() == 0  # recorded moments ago: a drain may still come
        db.session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(seconds=61)))
        db.session.commit()
        assert replay_failed_events() == 2
    # Each counted a try lost (marked failed first, in case its worker died applying it), then the replay's.
    assert events_in_db(app) == {created["id"]: ("processed", 2), later["id"]: ("processed", 2)}
    assert plan_of(app, user_id) == ("active", "pro")
    redis.Redis.from_url(redis_url).delete(flag)  # expired
    last = {**later, "id": in_lane(lane, "evt_last")}
    assert post_event(client, last, secret(app)).get_json()["status"] == "queued"
    assert [job for job in queued_jobs(app) if job[0] == DRAIN] == [(DRAIN, (lane,))]


def test_redis_down_for_the_queue_still_records_and_answers_and_the_replay_applies(app, client, redis_url, caplog):
    queue_mode(app, redis_url, queue_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    response = post_event(client, created, secret(app))
    assert (response.status_code, response.get_json()["status"]) == (200, "queued")
    assert events_in_db(app) == {created["id"]: ("received", 0)}
    assert "stripe_webhook_enqueue_failed" in caplog.text
    with app.app_context():
        db.session.execute(sa.update(StripeEvent).values(received_at=utcnow() - timedelta(minutes=2)))
        db.session.commit()
        assert replay_failed_events() == 1
    assert plan_of(app, user_id) == ("active", "pro")


def test_refusals_record_and_enqueue_nothing_in_queue_mode(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    body = json.dumps(event()).encode()
    forged = client.post(URL, data=body, content_type="application/json", headers={"Stripe-Signature": "t=1,v1=00"})
    assert (forged.status_code, forged.get_json()["error"]) == (400, "invalid_signature")
    older = post_event(client, {**event("evt_old"), "api_version": "2024-06-20"}, secret(seeded))
    assert (older.status_code, older.get_json()["error"]) == (422, "api_version_mismatch")
    nul = post_event(
        client, event("evt_nul", obj={"id": "cus_x", "object": "customer", "name": "A\u0000B"}), secret(seeded)
    )
    assert (nul.status_code, nul.get_json()["error"]) == (400, "invalid_payload")
    assert events_in_db(seeded) == {}
    assert queued_jobs(seeded) == []


def test_an_unknown_type_is_queued_then_ignored(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    payout = event(type_="payout.paid", obj={"id": "po_1", "object": "payout"})
    assert post_event(client, payout, secret(seeded)).get_json()["status"] == "queued"
    drain(seeded)
    assert events_in_db(seeded) == {"evt_test_1": ("ignored", 1)}
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_request_mode_is_unchanged_with_a_queue_configured(seeded, client, redis_url):
    """WEBHOOK_APPLY=request beside a task queue: applied in the request (the mail alone goes to the queue)."""
    seeded.config.update(WEBHOOK_APPLY="request", TASK_QUEUE_URL=redis_url)
    with seeded.app_context():
        UserFactory(email="old@example.com", stripe_customer_id="cus_test")
    assert post_event(client, event(), secret(seeded)).get_json() == {"status": "processed", "event_id": "evt_test_1"}
    assert events_in_db(seeded) == {"evt_test_1": ("processed", 1)}
    assert queued_jobs(seeded) == []


def customer_events(app, count: int, prefix: str = "evt_burst") -> list[dict]:
    """`count` customer.updated events, each of a customer of its own (a user each), one second apart."""
    with app.app_context():
        for n in range(count):
            UserFactory(email=f"c{n}@example.com", stripe_customer_id=f"cus_burst_{n}")
    start = int(utcnow().timestamp()) - count
    return [
        event(
            f"{prefix}_{n}",
            obj={"id": f"cus_burst_{n}", "object": "customer", "email": f"new{n}@example.com", "name": f"N{n}"},
            created=start + n,
        )
        for n in range(count)
    ]


def billing_emails(app) -> list[str]:
    """The users' billing contacts the events set, each audited once."""
    with app.app_context():
        audited = db.session.scalar(
            sa.select(sa.func.count(AuditLog.id)).where(AuditLog.action == "customer.email_changed")
        )
        emails = sorted(db.session.scalars(sa.select(User.billing_email).where(User.billing_email.is_not(None))))
        assert audited == len(emails)
        return emails


def test_a_burst_enqueues_a_drain_per_lane_and_one_worker_run_applies_each_event_once(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 40)
    assert {post_event(client, body, secret(seeded)).get_json()["status"] for body in burst} == {"queued"}
    jobs = queued_jobs(seeded)
    assert jobs == drains(body["id"] for body in burst)
    assert len(jobs) <= LANES
    drain(seeded)
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
    assert billing_emails(seeded) == sorted(f"new{n}@example.com" for n in range(40))
    assert failed_jobs(seeded) == 0
    assert queued_jobs(seeded) == []
    assert not any(redis.Redis.from_url(redis_url).exists(DRAIN_PENDING_KEY.format(lane)) for lane in range(LANES))


def test_an_event_recorded_after_a_drain_started_gets_a_drain_of_its_own(app, client, redis_url):
    """A drain deletes its lane's flag before its first claim: an event recorded while it runs (here, as its first
    event is applied) enqueues the lane's next drain, whether or not the running one also takes it."""
    queue_mode(app, redis_url)
    user_id = docs_user(app)
    created = load("customer.subscription.created", user_id)
    lane = drain_lane(created["id"])
    during = event(in_lane(lane), obj={"id": "cus_other", "object": "customer", "email": "o@example.com", "name": "O"})
    posted: list[dict] = []

    def deliver_during_the_drain(sender, change, writes):
        if not posted:
            posted.append(post_event(client, during, secret(app)).get_json())

    assert post_event(client, created, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        assert task_queue().count == 1
        task_queue().empty()  # the drain's job, taken by the worker that runs it below
    subscription_changed.connect(deliver_during_the_drain)
    try:
        with app.app_context():
            applied = apply_webhook_events(lane)
    finally:
        subscription_changed.disconnect(deliver_during_the_drain)
    assert posted == [{"status": "queued", "event_id": during["id"]}]
    drain_jobs = [job for job in queued_jobs(app) if job[0] == DRAIN]  # (and the activation mail's delivery)
    assert drain_jobs == [(DRAIN, (lane,))]  # the event's own drain, not left to the running one
    assert applied == 2  # the running drain took it too (committed before its next claim)
    drain(app)
    assert events_in_db(app) == {created["id"]: ("processed", 1), during["id"]: ("processed", 1)}
    assert failed_jobs(app) == 0


def test_a_faulty_event_in_a_drain_is_kept_failed_and_the_others_are_applied(seeded, client, redis_url, caplog):
    queue_mode(seeded, redis_url)
    bad = contradicting_event(seeded)
    before, after = customer_events(seeded, 2)
    for body in (before, bad, after):  # received in this order: the bad one in the middle of the drain
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    drain(seeded)
    assert events_in_db(seeded) == {
        before["id"]: ("processed", 1),
        "evt_bad": ("failed", 1),
        after["id"]: ("processed", 1),
    }
    assert billing_emails(seeded) == ["new0@example.com", "new1@example.com"]
    assert failed_jobs(seeded) == 1  # the drain fails once done: RQ's failed registry shows it
    with seeded.app_context():
        job = task_queue().failed_job_registry.get_job_ids()[0]
        assert "EventsNotApplied" in task_queue().fetch_job(job).latest_result().exc_string
    assert "stripe_webhook_handling_failed" in caplog.text


def test_drains_skip_an_event_another_holds_and_never_wait_for_it(seeded, client, redis_url):
    """SKIP LOCKED: the oldest event locked elsewhere (another drain applying it), a drain applies the others."""
    queue_mode(seeded, redis_url)
    first, second, third = customer_events(seeded, 3)
    for body in (first, second, third):
        post_event(client, body, secret(seeded))
    with seeded.app_context():
        engine = db.engine
    results: list[int] = []
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM stripe_events WHERE id = :id FOR UPDATE"), {"id": first["id"]})

        def run_drain():
            with seeded.app_context():
                results.append(apply_webhook_events(drain_lane(first["id"])))

        worker = threading.Thread(target=run_drain)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the drain waited for the locked event"
        holder.rollback()
    assert results == [2]
    assert events_in_db(seeded) == {
        first["id"]: ("received", 0),
        second["id"]: ("processed", 1),
        third["id"]: ("processed", 1),
    }


def test_two_drains_at_once_apply_each_event_once(seeded, client, redis_url):
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 60)
    for body in burst:
        post_event(client, body, secret(seeded))
    applied: list[int] = []
    start = threading.Barrier(2)

    def run_drain(lane: int):
        with seeded.app_context():
            start.wait()
            applied.append(apply_webhook_events(lane))

    threads = [threading.Thread(target=run_drain, args=(lane,)) for lane in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(applied) == len(burst), applied
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
    assert billing_emails(seeded) == sorted(f"new{n}@example.com" for n in range(60))


def test_a_drain_at_its_limit_enqueues_its_lanes_next_drain(seeded, client, redis_url, monkeypatch):
    queue_mode(seeded, redis_url)
    monkeypatch.setattr(webhooks, "DRAIN_LIMIT", 3)  # 500 in production: a smaller burst reaches it here
    burst = customer_events(seeded, 5)
    for body in burst:
        post_event(client, body, secret(seeded))
    lane = drain_lane(burst[0]["id"])
    with seeded.app_context():
        task_queue().empty()  # the drains the burst enqueued: this one runs here
        redis.Redis.from_url(redis_url).delete(*(DRAIN_PENDING_KEY.format(n) for n in range(LANES)))
        assert apply_webhook_events(lane) == 3
    assert queued_jobs(seeded) == [(DRAIN, (lane,))]  # the rest: its next drain
    drain(seeded)
    assert events_in_db(seeded) == {body["id"]: ("processed", 1) for body in burst}
