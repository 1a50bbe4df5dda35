"""`flask doctor` on the signing secret: the self-test line no longer reads as "the secret is right", and a second
line reads what the deliveries say: the last verified delivery (stored events, any host) and this host's refused
posts (counted only in the app server's metric files: a refused post is stored nowhere else).

The operator review: two app hosts, a wrong STRIPE_WEBHOOK_SECRET on one. Its doctor said ✓ (the self-test signs
with its own secret), while every delivery reaching it was refused and the other host's were verified.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from app.extensions import db
from app.models import StripeEvent
from tests.ops.test_doctor import doctor
from tests.ops.test_gunicorn import free_port, served_env, spawn_gunicorn, wait_until_up

ROOT = Path(__file__).resolve().parents[2]


def record(directory: Path, **outcomes: int) -> None:
    """An app server process of this host counting webhook outcomes through the app's own metrics module."""
    code = (
        "import sys\nfrom app.services import metrics\n"
        "for outcome, times in [a.split('=') for a in sys.argv[1:]]:\n"
        "    for _ in range(int(times)):\n"
        "        metrics.record_webhook('unknown' if outcome == 'invalid_signature' else 'customer.updated', outcome)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, *(f"{k}={v}" for k, v in outcomes.items())],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def store_verified_event(app, received_at: datetime) -> None:
    """The other host verified a delivery: its event row (rows exist only for verified deliveries)."""
    with app.app_context():
        db.session.execute(sa.delete(StripeEvent).where(StripeEvent.id == "evt_doctor_other_host"))
        db.session.add(
            StripeEvent(
                id="evt_doctor_other_host",
                type="customer.updated",
                stripe_created=received_at,
                received_at=received_at,
                status="processed",
                payload={"id": "evt_doctor_other_host", "type": "customer.updated"},
            )
        )
        db.session.commit()
        db.session.remove()


def line(lines: list[str], title: str) -> str:
    return next(item for item in lines if item[2:].startswith(title + " — ") or item[2:] == title)


def test_refused_posts_here_and_none_verified_fail_though_another_host_verified(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, monkeypatch
):
    store_verified_event(seeded, datetime(2026, 12, 4, 18, 30, 5, tzinfo=UTC))
    directory = tmp_path / "prometheus"
    directory.mkdir()
    record(directory, invalid_signature=7)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_wrong_here")
    text = "\n".join(lines)
    secret = line(lines, "Webhook signing secret")
    assert secret.startswith("✓") and "whether Stripe signs with it shows in Webhook signatures" in secret, text
    signatures = line(lines, "Webhook signatures")
    assert signatures.startswith("✗"), text
    assert "7 post(s) refused (invalid signature), 0 verified" in signatures
    assert "last verified delivery 2026-12-04 18:30:05 UTC (stored events, any app host)" in signatures
    fix = lines[lines.index(signatures) + 1]
    assert fix.startswith("    fix: ") and "STRIPE_WEBHOOK_SECRET" in fix


def test_refused_posts_beside_verified_ones_pass(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, monkeypatch
):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    record(directory, invalid_signature=4, processed=2)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_right_here")
    signatures = line(lines, "Webhook signatures")
    assert signatures.startswith("✓") and "4 post(s) refused (invalid signature), 2 verified" in signatures


def test_without_the_metrics_directory_it_says_why_refused_posts_are_unknown(
    seeded, migrated_database, redis_url, stripe_emulator, monkeypatch
):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with seeded.app_context():
        db.session.execute(sa.delete(StripeEvent))
        db.session.commit()
        db.session.remove()
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_anything")
    signatures = line(lines, "Webhook signatures")
    assert signatures.startswith("✓ Webhook signatures — no verified delivery stored yet; "), signatures
    assert "not stored" in signatures and "PROMETHEUS_MULTIPROC_DIR" in signatures
    assert line(lines, "Metrics directory").startswith("✓ Metrics directory — PROMETHEUS_MULTIPROC_DIR not set")


def test_a_metrics_directory_that_does_not_exist_fails(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, monkeypatch
):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    _, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_anything")
    metrics_line = line(lines, "Metrics directory")
    assert metrics_line.startswith("✗") and "does not exist" in metrics_line


def test_a_gunicorn_of_this_app_keeping_its_metrics_elsewhere_is_named(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, monkeypatch
):
    """gunicorn running this project with another PROMETHEUS_MULTIPROC_DIR (here gunicorn.conf.py's own temporary
    one): the counts doctor reads here are not the server's."""
    port = free_port()
    env = served_env(seeded, tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", TMPDIR=str(tmp_path))
    log_path = tmp_path / "gunicorn.log"
    process = spawn_gunicorn([], env, log_path)
    try:
        wait_until_up(process, port, log_path)
        here = tmp_path / "this-shell"
        here.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(here))
        _, lines = doctor(migrated_database, redis_url, stripe_emulator.url, STRIPE_WEBHOOK_SECRET="whsec_anything")
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    metrics_line = line(lines, "Metrics directory")
    assert metrics_line.startswith("✗") and str(process.pid) in metrics_line, "\n".join(lines)
    assert "started with another PROMETHEUS_MULTIPROC_DIR, or without one" in metrics_line
