"""A batch of mails goes to the mail server over one SMTP connection, not one connection (handshake, TLS, log-in)
per mail as Flask-Mail's `mail.send` makes; a connection that drops mid-batch is opened again for the next mail."""

from __future__ import annotations

import smtplib

from app.extensions import db
from app.services import mail
from app.services.accounts import send_verification
from tests.factories import UserFactory


def peers_of(smtp_sink, recipients: list[str]) -> list:
    return [m["peer"] for r in recipients for m in smtp_sink.messages if r in m["to"]]


def test_a_batch_of_mails_shares_one_connection(confirming_app, smtp_sink):
    app = confirming_app  # the suite's app mailing to the SMTP sink
    recipients = [f"batch{n}@example.com" for n in range(3)]
    with app.test_request_context():
        for address in recipients:
            send_verification(UserFactory(email=address))
        assert mail.deliver_pending() == 3
        db.session.remove()
    peers = peers_of(smtp_sink, recipients)
    assert len(peers) == 3 and len(set(peers)) == 1, peers


def test_a_connection_lost_mid_batch_is_opened_again(confirming_app, smtp_sink, monkeypatch):
    """The server drops the connection after the first mail: that mail is sent, the second fails and stays pending
    (tried again later), the third goes over a new connection."""
    app = confirming_app
    recipients = [f"drop{n}@example.com" for n in range(3)]
    sent = []
    real_sendmail = smtplib.SMTP.sendmail

    def sendmail_then_drop(self, *args, **kwargs):
        if len(sent) == 1:  # the server hangs up under the second mail
            sent.append("dropped")
            self.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        sent.append("ok")
        return real_sendmail(self, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "sendmail", sendmail_then_drop)
    with app.test_request_context():
        for address in recipients:
            send_verification(UserFactory(email=address))
        delivery = mail.deliver_batch()
        assert (delivery.sent, delivery.failed) == (2, 1)
        statuses = {
            row.recipient: (row.status, row.attempts)
            for row in db.session.scalars(db.select(mail.MailOutbox).where(mail.MailOutbox.recipient.in_(recipients)))
        }
        db.session.remove()
    assert statuses == {
        "drop0@example.com": ("sent", 1),
        "drop1@example.com": ("pending", 1),
        "drop2@example.com": ("sent", 1),
    }
    first, third = peers_of(smtp_sink, ["drop0@example.com"]), peers_of(smtp_sink, ["drop2@example.com"])
    assert len(first) == 1 and len(third) == 1 and first != third
