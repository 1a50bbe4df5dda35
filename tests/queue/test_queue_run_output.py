"""`flask queue run JOB` says what the number it prints counts: "reconcile_all: 0" read as "no customer synced"
right after `flask stripe sync --all` had synced three."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("job", "line"),
    [
        ("reconcile_all", "reconcile_all: 0 customer(s) had drifted and were repaired"),
        ("deliver_mail", "deliver_mail: 0 mail(s) sent"),
        ("replay_failed_events", "replay_failed_events: 0 event(s) applied"),
        ("send_alert_digests", "send_alert_digests: 0 digest(s) added to the mail outbox"),
    ],
)
def test_each_job_names_what_its_number_counts(seeded, runner, job, line):
    with seeded.app_context():  # as `flask` pushes it for every command
        result = runner.invoke(args=["queue", "run", job])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == line
