"""A mail the SMTP server refuses is logged without its recipient's address: `mail_refused`, `mail_send_failed` and
`mail_given_up` carry the reply's code and its text with any address replaced (the mail's id and kind identify it),
while the outbox row keeps the full error for the operator. Before, the lines carried `SMTPRecipientsRefused`'s text,
keyed by the address — personal data in logs that otherwise keep it out.

A real SMTP server (aiosmtpd, test_mail_delivery's refusing handler) over the socket; nothing of ours is mocked."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from app import create_app
from app.extensions import db
from app.models import MailOutbox
from app.services.mail import MAIL_MAX_ATTEMPTS, Delivery, deliver_batch
from tests.billing.test_mail_delivery import Refusing, free_port, queue
from tests.conftest import make_config

REFUSED, LATER = "gone@refused.example", "late.person@later.example"


class RefusingAndDeferring(Refusing):
    """test_mail_delivery's server (refuses refused.example for good: 550), which also puts later.example off
    (451), naming the address in its reply as many servers do."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@later.example"):
            return f"451 4.2.0 <{address}>: Recipient address deferred, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def refusing_app(seeded, migrated_database, redis_url):
    controller = Controller(RefusingAndDeferring(), hostname="127.0.0.1", port=free_port())
    controller.start()
    yield create_app(make_config(migrated_database, redis_url, MAIL_SERVER="127.0.0.1", MAIL_PORT=str(controller.port)))
    controller.stop()


def errors(app) -> dict[str, tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(sa.select(MailOutbox.recipient, MailOutbox.status, MailOutbox.error))
        return {recipient: (status, error) for recipient, status, error in rows}


def test_refused_deferred_and_given_up_mails_log_no_address(refusing_app, caplog):
    queue(refusing_app, REFUSED, LATER)
    with caplog.at_level(logging.INFO), refusing_app.app_context():
        assert deliver_batch() == Delivery(sent=0, failed=2)  # refused for good; put off (pending)
        db.session.execute(
            sa.update(MailOutbox)
            .where(MailOutbox.recipient == LATER)
            .values(attempts=MAIL_MAX_ATTEMPTS - 1, next_attempt_at=None)
        )
        db.session.commit()
        assert deliver_batch() == Delivery(sent=0, failed=1)  # its last attempt: given up

    # The app's lines (aiosmtpd's own `mail.log` logger, the test's server, speaks of the envelope).
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("app")]
    logged = {
        event: [line for line in lines if event in line]
        for event in ("mail_refused", "mail_send_failed", "mail_given_up")
    }
    assert all(len(found) == 1 for found in logged.values()), logged
    assert "'smtp_code': 550" in logged["mail_refused"][0] and "No such user" in logged["mail_refused"][0]
    assert "'smtp_code': 451" in logged["mail_send_failed"][0] and "[address]" in logged["mail_send_failed"][0]
    assert "'smtp_code': 451" in logged["mail_given_up"][0]
    leaked = [line for line in lines if "@" in line or "refused.example" in line or "late.person" in line]
    assert leaked == []

    # The outbox row keeps the whole error, address and all: the operator's to read.
    stored = errors(refusing_app)
    assert stored[REFUSED][0] == "failed" and REFUSED in stored[REFUSED][1]
    assert stored[LATER][0] == "failed" and LATER in stored[LATER][1]
