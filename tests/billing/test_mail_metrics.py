"""The mail a process sent, and its failed sends, on its /metrics (a worker's `--metrics-port` serves them):
`mail_sent_total{kind}` when the mail server accepts a mail, `mail_send_failures_total{kind, reason}` when a send
fails — `refused` (a 4xx/5xx reply), `timeout` (no answer within MAIL_TIMEOUT: tests/queue/test_mail_hung_server.py)
or `error` (anything else: nothing listening, a dropped connection)."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from app import create_app
from app.extensions import db
from app.services.mail import Delivery, deliver_batch, queue_mail
from app.services.metrics import render_metrics
from tests.billing.test_mail_delivery import Refusing, free_port
from tests.conftest import make_config
from tests.factories import UserFactory

KIND = "subscription_ended"


@pytest.fixture
def mail_port():
    return free_port()


@pytest.fixture
def mail_app(app, migrated_database, redis_url, mail_port):
    mail_app = create_app(make_config(migrated_database, redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(mail_port)))
    yield mail_app
    with mail_app.app_context():
        db.session.remove()
        db.engine.dispose()


def queue(app, *addresses: str) -> None:
    with app.test_request_context("/"):
        for address in addresses:
            queue_mail(KIND, f"{address}:ended", UserFactory(email=address), plan="Pro")
        db.session.commit()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": KIND, **labels}) or 0.0


def test_sent_and_refused_mail_are_counted(mail_app, mail_port):
    controller = Controller(Refusing(), hostname="127.0.0.1", port=mail_port)
    controller.start()
    try:
        sent, refused = sample("mail_sent_total"), sample("mail_send_failures_total", reason="refused")
        queue(mail_app, "gone@refused.example", "ada@example.com", "bob@example.com")
        with mail_app.app_context():
            assert deliver_batch() == Delivery(sent=2, failed=1)
    finally:
        controller.stop()
    assert sample("mail_sent_total") == sent + 2
    assert sample("mail_send_failures_total", reason="refused") == refused + 1
    scrape = render_metrics(include_revenue=False)[0].decode()
    assert f'mail_sent_total{{kind="{KIND}"}}' in scrape
    assert f'mail_send_failures_total{{kind="{KIND}",reason="timeout"}}' in scrape  # every reason there from 0


def test_a_mail_server_not_listening_counts_as_error(mail_app):
    errors, sent = sample("mail_send_failures_total", reason="error"), sample("mail_sent_total")
    queue(mail_app, "nobody@example.com")
    with mail_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=1)
    assert sample("mail_send_failures_total", reason="error") == errors + 1
    assert sample("mail_sent_total") == sent
