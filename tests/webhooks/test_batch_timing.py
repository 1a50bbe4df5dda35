"""A drain's batch applies many events in one transaction: each event's handling time
(`stripe_webhook_processing_seconds`, the growth benchmark's per-event figure and the alert's) must stay that
event's own — its handler, its share of the batch's commit, its announcement — not the time from its start to the
end of its batch, which grows with how many events the batch found."""

from __future__ import annotations

import time

from app.extensions import task_queue
from app.services import webhooks
from app.services.webhooks import drain_lane
from tests.ops.test_metrics import scrape
from tests.webhooks.signing import post_event
from tests.webhooks.test_endpoint import secret
from tests.webhooks.test_queue_mode import customer_events, queue_mode


def test_a_batchs_handling_times_add_up_to_the_batchs_time_not_to_each_events_wait_for_its_end(
    seeded, client, redis_url
):
    queue_mode(seeded, redis_url)
    burst = customer_events(seeded, 12)
    for body in burst:
        assert post_event(client, body, secret(seeded)).get_json()["status"] == "queued"
    before = scrape(client)
    started = time.perf_counter()
    with seeded.app_context():
        task_queue().empty()
        drained = webhooks.drain_received(drain_lane(burst[0]["id"]))
    elapsed = time.perf_counter() - started
    after = scrape(client)
    assert (drained.applied, drained.failed) == (12, 0)  # in one batch (DRAIN_BATCH is 20)
    observed = after["stripe_webhook_processing_seconds_count"] - before.get(
        "stripe_webhook_processing_seconds_count", 0
    )
    total = after["stripe_webhook_processing_seconds_sum"] - before.get("stripe_webhook_processing_seconds_sum", 0)
    assert observed == 12
    # Each timed to the batch's end, the twelve would add up to about 6.5 times the batch (the first waits for
    # eleven others, the last for none): more than the whole drain took.
    assert total <= elapsed
    # and not lost either: the handlers and the commit are most of a drain (its claim and log lines the rest)
    assert total >= 0.25 * elapsed
