"""A worker beside the web processes (`flask queue worker --nice`) holds its batches back while the host is busy.

Nice left a worker a share of busy CPUs, and what its batches make others do (its PostgreSQL backend's queries, the
SMTP server's side of each mail) is not niced: beside gunicorn, 2 niced workers took a third of the accepted webhook
rate while applying little. Now, between batches, the worker's `BusyHostGate` reads the host's CPU times
(`/proc/stat`) and lets a batch go once a core is free (half of them, on a host of one or two), or once it has
waited `longest`: the backlog still moves on a host that stays busy, and goes at once when the requests stop.

The host's CPU times here are a file the test writes (the gate reads `stat_path`), advanced by the gate's own
sleeps as a busy or an idle host's would be.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.extensions import db, task_queue
from app.services.webhooks import drain_lane
from app.tasks import HOST_GATE, BusyHostGate, apply_webhook_events, hold_while_host_busy
from tests.queue.test_mail_delivery_job import commit_mails, queued_app, sink, smtp_port, statuses, work  # noqa: F401  (the fixtures)
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import secret
from tests.webhooks.test_queue_mode import customer_events, queue_mode

CORES = 2


class HostClock:
    """`/proc/stat` of a host of CORES cores whose CPUs are `busy` (a share, 0 to 1) while the gate sleeps."""

    def __init__(self, path, busy: float):
        self.path, self.busy = path, busy
        self.user = self.idle = self.niced = 0
        self.sleeps: list[float] = []
        self.write()

    def write(self) -> None:
        total = f"cpu  {self.user} {self.niced} 0 {self.idle} 0 0 0 0 0 0\n"
        per_core = "".join(f"cpu{n} 0 0 0 0 0 0 0 0 0 0\n" for n in range(CORES))
        self.path.write_text(total + per_core + "intr 0\n")

    def advance(self, seconds: float, busy: float | None = None, niced: float = 0.0) -> None:
        """`seconds` of the host's time: each core `busy` of it at normal priority, `niced` of it niced."""
        ticks = round(seconds * 100 * CORES)
        share = self.busy if busy is None else busy
        self.user += round(ticks * share)
        self.niced += round(ticks * niced)
        self.idle += ticks - round(ticks * share) - round(ticks * niced)
        self.write()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


@pytest.fixture
def host(tmp_path):
    return HostClock(tmp_path / "stat", busy=1.0)


def gate_of(host: HostClock, **settings) -> BusyHostGate:
    return BusyHostGate(stat_path=host.path, sleep=host.sleep, **settings)


def test_a_busy_host_holds_the_batch_back_for_longest_at_most(host):
    gate = gate_of(host, probe=0.2, longest=1.0)
    assert gate.wait() == pytest.approx(1.0)
    assert host.sleeps == [0.2] * 5
    host.advance(0.5)  # the batch let go, the host still busy: the next one waits again
    assert gate.wait() == pytest.approx(1.0)


def test_the_batch_goes_once_a_core_is_free(host):
    gate = gate_of(host, probe=0.2, longest=5.0)
    gate.wait()
    host.sleeps.clear()
    host.busy = 0.4  # the requests stopped: 1.2 of the 2 cores free
    assert gate.wait() == pytest.approx(0.2)  # the previous batch's time was busy: one look without the worker
    host.advance(0.3)  # the batch, on a host with cores to spare: the next goes at once
    assert gate.wait() == 0.0
    assert host.sleeps == [0.2]


def test_niced_work_is_free_time_and_half_a_busy_core_is_not_enough(host):
    gate = gate_of(host, probe=0.2, longest=5.0)
    gate.wait()
    host.advance(0.5, busy=0.1, niced=0.9)  # other niced work (the other worker): the requests come first anyway
    assert gate.wait() == 0.0
    host.advance(0.5, busy=0.75)  # half a core free on 2: held back
    host.busy = 0.75
    assert gate.wait() == pytest.approx(5.0)


def test_a_host_busy_for_a_whole_spell_is_left_to_nice_until_a_core_is_free_again(host):
    """Busy for more than a burst of requests (other work, or requests that do not stop): holding on would leave the
    backlog waiting as long as the host is busy."""
    gate = gate_of(host, probe=0.2, longest=1.0, spell=3.0)
    assert [gate.wait() for _ in range(3)] == [pytest.approx(1.0)] * 3
    host.sleeps.clear()
    host.advance(0.5)
    assert gate.wait() == 0.0 and host.sleeps == []  # the spell is over: batches go, niced
    host.advance(0.5, busy=0.2)  # a core free again
    assert gate.wait() == 0.0
    host.advance(0.5)
    assert gate.wait() == pytest.approx(1.0)  # the next busy spell is held back again


def test_without_the_hosts_cpu_times_nothing_is_held_back(tmp_path):
    slept: list[float] = []
    gate = BusyHostGate(stat_path=tmp_path / "missing", sleep=slept.append)
    assert (gate.wait(), slept) == (0.0, [])


def test_only_a_worker_beside_the_web_processes_holds_its_batches(app, host):
    with app.app_context():
        assert hold_while_host_busy() == 0.0 and host.sleeps == []
        app.extensions[HOST_GATE] = gate_of(host, probe=0.1, longest=0.3)
        try:
            assert hold_while_host_busy() == pytest.approx(0.3)
        finally:
            del app.extensions[HOST_GATE]


def test_a_drain_holds_each_batch_back_while_the_host_is_busy_then_applies_every_event(app, client, redis_url, host):
    """The drain waits before each claim (holding no transaction: the events are still `received` meanwhile), and
    applies every event once it is let go, in one batch as before."""
    queue_mode(app, redis_url)
    bodies = customer_events(app, 3)
    for body in bodies:
        assert post_event(client, body, secret(app)).get_json()["status"] == "queued"
    with app.app_context():
        engine = db.engine
        task_queue().empty()
    seen: list[dict] = []

    def busy_sleep(seconds: float) -> None:
        with engine.connect() as connection:  # what another session sees while the drain waits
            seen.append(
                dict(connection.execute(sa.text("SELECT status, count(*) FROM stripe_events GROUP BY status")).all())
            )
            idle = connection.execute(
                sa.text(  # this test's database only: the suite's other worker has its own, with its own tests
                    "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        assert idle == 0  # the drain holds no transaction open while it waits
        host.sleep(seconds)

    app.extensions[HOST_GATE] = BusyHostGate(stat_path=host.path, sleep=busy_sleep, probe=0.1, longest=0.3)
    try:
        with app.app_context():
            assert apply_webhook_events(drain_lane(bodies[0]["id"])) == 3
    finally:
        del app.extensions[HOST_GATE]
    # Three looks before the batch (all `received`), three before the claim that found nothing left.
    assert seen[:3] == [{"received": 3}] * 3
    assert seen[3:] == [{"processed": 3}] * 3


def test_a_mail_delivery_job_holds_each_batch_back_while_the_host_is_busy(queued_app, sink, host):  # noqa: F811
    """The mail job too: each batch of 50 waits for the host (its SMTP server's side is not niced either)."""
    commit_mails(queued_app, 60)
    sent_at_each_look: list[int] = []

    def busy_sleep(seconds: float) -> None:
        sent_at_each_look.append(len(sink.recipients))
        host.sleep(seconds)

    queued_app.extensions[HOST_GATE] = BusyHostGate(stat_path=host.path, sleep=busy_sleep, probe=0.1, longest=0.2)
    work(queued_app)
    assert statuses(queued_app) == {"sent": 60}
    assert sent_at_each_look == [0, 0, 50, 50]  # two looks before each batch
