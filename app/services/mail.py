"""Mail through an outbox: queued in the transaction that causes it, sent after commit, never twice.

Each row has a unique (dedupe_key, kind): the key names the transition (a subscription's activation, an
invoice's failed attempt), so a redelivered webhook, or the success page and a webhook reporting the same
change, find the row already there. Sent with Flask-Mail over SMTP (`MAIL_*`); with no `MAIL_SERVER`
(development) each mail is written to `instance/mail/` and logged instead.
"""
from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from flask import current_app, render_template
from flask_mail import Message
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db, mail
from app.logging import get_logger
from app.models import MailOutbox, User, utcnow
from app.services.signals import SyncResult
from app.urls import external_url

log = get_logger(__name__)

SUBJECTS = {
    "payment_failed": "Action needed: your payment failed",
    "subscription_activated": "Welcome to Smart Strategies Builder {plan}",
    "cancellation_scheduled": "Your {plan} plan will end on {date}",
    "subscription_ended": "Your {plan} plan has ended",
}


def queue_mail(kind: str, dedupe_key: str, user: User, **context) -> None:
    """Add a mail to the outbox in the current transaction; a second call with the same key adds nothing."""
    subject = SUBJECTS[kind].format(**{k: v for k, v in context.items() if isinstance(v, str)})
    body = render_template(f"mail/{kind}.txt", user=user, **context)
    values = {"dedupe_key": dedupe_key, "kind": kind, "user_id": user.id, "recipient": user.email,
              "subject": subject, "body": body, "status": "pending", "attempts": 0, "created_at": utcnow()}
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(MailOutbox).values(**values).on_conflict_do_nothing())


def deliver_pending(limit: int = 50) -> int:
    """Send pending mails (after the commit that queued them); failures stay pending with their error."""
    sent = 0
    rows = db.session.scalars(
        select(MailOutbox).where(MailOutbox.status == "pending").order_by(MailOutbox.id).limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.attempts += 1
        try:
            send(row)
        except Exception as error:  # SMTP trouble must not lose the mail nor fail the webhook that queued it
            row.error = f"{type(error).__name__}: {error}"[:500]
            log.warning("mail_send_failed", kind=row.kind, mail_id=row.id, error=row.error)
        else:
            row.status, row.sent_at, row.error = "sent", utcnow(), None
            sent += 1
            log.info("mail_sent", kind=row.kind, mail_id=row.id)
    db.session.commit()
    return sent


def deliver_queued(sender, change: SyncResult, **_) -> None:
    """`subscription_changed` receiver: send what the committed change queued (nothing when it queued none)."""
    if change.mail_queued:
        deliver_pending()


def html_body(subject: str, body: str) -> str:
    """The HTML alternative of a mail: its text paragraphs in the one billing layout (mail/layout.html), the
    sign-off left to the layout, addresses made links."""
    paragraphs = [" ".join(part.split()) for part in body.strip().split("\n\n") if part.strip()]
    paragraphs = [p for p in paragraphs if not p.startswith("— ")]
    return render_template("mail/layout.html", subject=subject, paragraphs=paragraphs)


def send(row: MailOutbox) -> None:
    if not current_app.config.get("MAIL_SERVER"):
        write_to_folder(row)
        return
    mail.send(Message(subject=row.subject, recipients=[row.recipient], body=row.body,
                      html=html_body(row.subject, row.body)))


def write_to_folder(row: MailOutbox) -> None:
    """Development: the mail as an .eml file under instance/mail/ (open it with any mail client)."""
    folder = Path(current_app.instance_path) / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    message = EmailMessage()
    message["From"] = current_app.config.get("MAIL_DEFAULT_SENDER") or "billing@localhost"
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message.set_content(row.body)
    message.add_alternative(html_body(row.subject, row.body), subtype="html")
    (folder / f"{row.id:06d}-{row.kind}.eml").write_bytes(bytes(message))
    print(f"--- mail to {row.recipient}: {row.subject}\n{row.body}\n---")


def billing_url() -> str:
    """The billing page's address, also outside a request (the CLI's nightly sync)."""
    return external_url("billing.show_billing")
