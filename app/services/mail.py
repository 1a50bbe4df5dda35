"""Mail through an outbox: queued in the transaction that causes it, sent after commit, never twice.

Each row has a unique (dedupe_key, kind): the key names the transition (a subscription's activation, an
invoice's failed attempt), so a redelivered webhook, or the success page and a webhook reporting the same
change, find the row already there. Sent with Flask-Mail over SMTP (`MAIL_*`); with no `MAIL_SERVER`
(development) each mail is written to `instance/mail/` and logged instead.

Delivery never happens inside a request: after the commit, `deliver_queued` hands it to the task queue (an RQ job
that a `flask queue worker` process runs, retried with backoff while SMTP is down; app/tasks.py). Without a queue
(`TASK_QUEUE_URL` unset, a fresh clone) the app's own process delivers once the response has been sent.

A mail that fails backs off on its own (`next_attempt_at`, MAIL_BACKOFF): tried again 10 s, 30 s, 1 min, 5 min,
15 min and 1 h after its first six failed attempts (the delivery job's own retries, MAIL_RETRY, come at those same
times), then every 3 h; a delivery takes only the mails due. Its 14th failed attempt (MAIL_MAX_ATTEMPTS, about 22 h
after the first) gives it up: `failed`, like an address refused for good, logged (`mail_given_up`) and counted
(`mail_given_up_total`). The age of the oldest waiting mail (`flask doctor`, `mail_outbox_oldest_pending_seconds`) is
still counted from its creation, however long it backs off.

One job sends every pending mail, so a commit enqueues one only when none is waiting: it sets the
`mail_delivery_pending` flag (SET NX) and enqueues the job when the flag was not set; the job deletes the flag before
it reads the outbox (a burst of webhook events, each with its mail, otherwise left a job per mail, all but the first
finding nothing to send: RQ's bookkeeping, ~19 Redis commands a job, on every event).
"""

from __future__ import annotations

import re
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from flask import Flask, Response, after_this_request, current_app, has_request_context, render_template
from flask_mail import Connection, Message
from jinja2.utils import urlize
from markupsafe import Markup
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.timeouts import BaseTimeoutException
from sqlalchemy import bindparam, or_, select, text

from app.extensions import db, task_queue
from app.logging import get_logger
from app.models import MailOutbox, utcnow
from app.services import metrics
from app.services.signals import CacheWrites, SyncResult
from app.urls import external_url

log = get_logger(__name__)

SUBJECTS = {
    "payment_failed": "Action needed: your payment failed",
    "subscription_activated": "Welcome to Smart Strategies Builder {plan}",
    "cancellation_scheduled": "Your {plan} plan will end on {date}",
    "subscription_ended": "Your {plan} plan has ended",
    "scheduled_change_applied": "Your plan is now {plan}",
    "plan_change_scheduled": "Your plan changes to {plan} on {date}",
    "password_reset": "Reset your Smart Strategies Builder password",
    "verify_email": "Confirm your email for Smart Strategies Builder",
    "alert_signal": "{side} signal: {strategy} on {bar}",
    "alert_digest": "Your alerts digest: {signals}",
    "email_change": "Confirm your new email for Smart Strategies Builder",
    "email_change_notice": "A change of your Smart Strategies Builder login email was requested",
    "signup_attempt": "Someone tried to sign up with your Smart Strategies Builder address",
    "email_change_taken": "Someone asked to use your Smart Strategies Builder address for another account",
}


class Addressee(Protocol):
    """Whom a mail is for: a `User`, or its id and login email read as values (`sync.UserRef`)."""

    @property
    def id(self) -> int: ...

    @property
    def email(self) -> str: ...


def queue_mail(kind: str, dedupe_key: str, user: Addressee, recipient: str | None = None, **context) -> None:
    """Add a mail to the outbox in the current transaction; a second call with the same key adds nothing.

    It goes to the user's login email unless `recipient` names another address (the new one of an email change).
    """
    db.session.execute(INSERT_MAIL, outbox_row(kind, dedupe_key, user, recipient, **context))


#: The columns of an outbox row `outbox_row` gives, in order.
OUTBOX_COLUMNS = ("dedupe_key", "kind", "user_id", "recipient", "subject", "body", "status", "attempts", "created_at")


def outbox_row(kind: str, dedupe_key: str, user: Addressee, recipient: str | None = None, **context) -> dict[str, Any]:
    """The outbox row of a mail (rendered now), for `queue_mail` or for a writer that inserts it in a statement of
    its own making (the subscription writer: with the row it follows, in one statement)."""
    subject = SUBJECTS[kind].format(**{k: v for k, v in context.items() if isinstance(v, str)})
    body = render_template(f"mail/{kind}.txt", user=user, **context)
    return {
        "dedupe_key": dedupe_key,
        "kind": kind,
        "user_id": user.id,
        "recipient": recipient or user.email,
        "subject": subject,
        "body": body,
        "status": "pending",
        "attempts": 0,
        "created_at": utcnow(),
    }


#: The outbox row unless its (dedupe_key, kind) is there. Written out, as SQLAlchemy caches the compiled form of a
#: text statement but compiles the dialects' ON CONFLICT inserts anew each time (most of a millisecond per mail,
#: on the webhook's path); PostgreSQL and SQLite both speak it.
INSERT_MAIL = text(
    "INSERT INTO mail_outbox (dedupe_key, kind, user_id, recipient, subject, body, status, attempts, created_at) "
    "VALUES (:dedupe_key, :kind, :user_id, :recipient, :subject, :body, :status, :attempts, :created_at) "
    "ON CONFLICT (dedupe_key, kind) DO NOTHING"
).bindparams(bindparam("created_at", type_=MailOutbox.created_at.type))


#: Each mail's own backoff: after its n-th failed attempt it is next due MAIL_BACKOFF[n - 1] later (its
#: `next_attempt_at`), the last entry for every attempt beyond: 10 s, 30 s, 1 min, 5 min, 15 min, 1 h, then every 3 h.
#: A delivery (a job, its retry, the every-minute sweep of app/tasks.py, or the web process without a queue) takes only
#: the mails due, so while SMTP is down a mail is tried on this schedule, whatever runs meanwhile. The short first
#: steps let a blip (a dropped connection, a mail server restarting) cost a reset link seconds, not minutes.
MAIL_BACKOFF = (
    timedelta(seconds=10),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
)
#: A mail whose attempt number MAIL_MAX_ATTEMPTS fails is given up: `failed`, its last error kept, logged
#: (`mail_given_up`) and counted (`mail_given_up_total{kind}`). On MAIL_BACKOFF that attempt comes 22 h 21 min 40 s
#: after the first (1 h 21 min 40 s, then 7 × 3 h): a mail still not sent is a day late, its links (a password reset,
#: an email change: 1 h) long expired, its alert stale; MailDeliveryStuck (the oldest pending mail waiting over 15 min)
#: has fired for most of that day. Only a failure of the mail itself counts toward it: RQ's job timeout counts the
#: attempt but never gives the mail up.
MAIL_MAX_ATTEMPTS = 14


#: A mail due within this long counts as due: RQ schedules a job's retry to the whole second (it truncates the time),
#: so the retry meant for a mail may come up to a second before the mail's `next_attempt_at`, and would find it not
#: due (and, nothing failing, end the job's retries); hosts' clocks differ a little too.
DUE_LEEWAY = timedelta(seconds=2)


def next_attempt_delay(attempts: int) -> timedelta:
    """How long a mail waits after its `attempts`-th failed attempt (MAIL_BACKOFF)."""
    return MAIL_BACKOFF[min(max(attempts, 1), len(MAIL_BACKOFF)) - 1]


#: The worker's retries of a delivery job that failed (SMTP down), at MAIL_BACKOFF's first six steps: 10 s, 30 s,
#: 1 min, 5 min, 15 min, 1 h: a mail first tried by the job's first run, and failing in each, is due again as each
#: retry comes (counted from the job's failure, after the mail's), so without the every-minute sweep (no
#: `flask queue cron`) it is still tried on its schedule for its first 1 h 21 min.
#: A retry sends every mail due by then (those committed meanwhile, those a hung server left untried, those that
#: failed in an earlier job); a mail that failed waits for its own `next_attempt_at`, however many jobs, retries and
#: sweeps run before it.
MAIL_RETRY = Retry(max=6, interval=[int(step.total_seconds()) for step in MAIL_BACKOFF[:6]])
#: The task the queue runs, named (not imported: app/tasks.py is built on this module).
DELIVER_TASK = "app.tasks.deliver_mail"


@dataclass(frozen=True)
class Delivery:
    sent: int
    failed: int


def deliver_batch(limit: int = 50) -> Delivery:
    """Send up to `limit` pending mails, the least tried first (a mail that keeps failing never holds newer ones
    back), each in a transaction of its own: its row is locked (SKIP LOCKED: two workers never send one twice) while
    it is sent, and recorded as sent in a commit as soon as the mail server takes it. A process killed mid-batch
    (kill -9, out of memory) thus sends again at most the one mail it was sending, not the batch's earlier ones.

    Only the mails due are taken: never tried (`next_attempt_at` NULL) or their `next_attempt_at` passed. A failure
    stays pending with its error and its `next_attempt_at` (now + `next_attempt_delay(attempts)`), set in the commit
    that records the attempt: another worker's batch, running meanwhile, does not take it again once it is unlocked.
    An address the mail server refuses for good (a 5xx reply to it) is not tried again: its row is `failed`; so is a
    mail whose MAIL_MAX_ATTEMPTS-th attempt fails (given up). A mail server that does not answer within MAIL_TIMEOUT
    ends the batch (the rest waits for the retry, untried), so a hung server holds the worker — or, without a queue,
    the web process — for about MAIL_TIMEOUT, not for each mail in turn. RQ's own job timeout is never taken for the
    mail's error: the mail stays pending (its attempt counted, its error left as it was) and the exception goes on
    to RQ, whose job it is."""
    sent = failed = 0
    tried: list[int] = []
    smtp = SmtpBatch()
    try:
        while len(tried) < limit:
            row = db.session.scalars(
                select(MailOutbox)
                .where(
                    MailOutbox.status == "pending",
                    or_(MailOutbox.next_attempt_at.is_(None), MailOutbox.next_attempt_at <= utcnow() + DUE_LEEWAY),
                    MailOutbox.id.not_in(tried),
                )
                .order_by(MailOutbox.attempts, MailOutbox.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                break
            tried.append(row.id)
            row.attempts += 1
            try:
                by_smtp = send(row, smtp)
            except BaseTimeoutException:  # RQ's job timeout: the job ran out of time, not the mail
                smtp.abort()
                row.next_attempt_at = utcnow() + next_attempt_delay(row.attempts)
                kind, mail_id = row.kind, row.id
                try:
                    db.session.commit()  # pending, its attempt counted: a delivery sends it once it is due
                except Exception:
                    db.session.rollback()
                metrics.count_mail_failure(kind, "timeout")
                log.warning("mail_send_interrupted", kind=kind, mail_id=mail_id, reason="job_timeout")
                raise
            except Exception as error:  # SMTP trouble must not lose the mail
                row.error = f"{type(error).__name__}: {error}"[:500]
                refused = refused_for_good(error)
                given_up = not refused and row.attempts >= MAIL_MAX_ATTEMPTS
                if refused or given_up:
                    row.status = "failed"
                else:  # in the attempt's commit: no other worker takes it before it is due
                    row.next_attempt_at = utcnow() + next_attempt_delay(row.attempts)
                kind, mail_id, attempts = row.kind, row.id, row.attempts
                logged = loggable_error(error, row.recipient)  # the row keeps the full error, address and all
                db.session.commit()
                failed += 1
                reason = failure_reason(error)
                metrics.count_mail_failure(kind, reason)
                if given_up:
                    metrics.MAIL_GIVEN_UP.labels(kind=kind).inc()
                    log.error("mail_given_up", kind=kind, mail_id=mail_id, attempts=attempts, **logged)
                else:
                    log.warning("mail_refused" if refused else "mail_send_failed", kind=kind, mail_id=mail_id, **logged)
                if reason == "timeout":  # the server hangs: the rest of the batch waits for the retry
                    break
            else:
                row.status, row.sent_at, row.error = "sent", utcnow(), None
                kind, mail_id = row.kind, row.id
                db.session.commit()  # before the next mail: a crash from here on never sends this one again
                sent += 1
                if by_smtp:  # a mail written to the folder said so itself: `mail_sent` means the mail server took it
                    metrics.MAIL_SENT.labels(kind=kind).inc()
                    log.info("mail_sent", kind=kind, mail_id=mail_id)
    finally:
        smtp.close()
    return Delivery(sent, failed)


class TimedConnection(Connection):
    """Flask-Mail's SMTP connection with a socket timeout (MAIL_TIMEOUT): Flask-Mail opens `smtplib.SMTP(host, port)`
    with none, and a mail server that accepts the connection and never answers held the worker (or the web process)
    until something killed it. Each blocking step (connecting, every reply awaited, each write) now waits at most
    MAIL_TIMEOUT seconds; a host half set up (STARTTLS or the log-in failed) is closed, not left open."""

    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = float(current_app.config.get("MAIL_TIMEOUT") or DEFAULT_MAIL_TIMEOUT)
        kind = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = kind(self.mail.server, self.mail.port or 0, timeout=timeout)
        try:
            host.set_debuglevel(int(self.mail.debug))
            if self.mail.use_tls:
                host.starttls()
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()
            raise
        return host


#: MAIL_TIMEOUT's default (app/config.py), for an app configured without it.
DEFAULT_MAIL_TIMEOUT = 10.0


class SmtpBatch:
    """One SMTP connection for a batch of mails: opened at its first mail, closed (QUIT) once the batch is done.

    Flask-Mail's `mail.send` opens a connection for each mail and quits it: a TCP and SMTP handshake (and TLS and
    a log-in, where configured) per mail, for the worker and the mail server alike. A refused recipient or body
    leaves the connection usable (smtplib resets the transaction); an error of the connection itself (dropped,
    timed out, refused) closes it, and the next mail of the batch opens another. Every connection has MAIL_TIMEOUT
    (`TimedConnection`)."""

    def __init__(self) -> None:
        self.connection: Any = None

    def send(self, message: Message) -> None:
        if self.connection is None:
            self.connection = TimedConnection(current_app.extensions["mail"]).__enter__()  # configure_host() on enter
        try:
            self.connection.send(message)
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError, OSError):
            self.close()
            raise

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None or connection.host is None:
            return
        try:
            connection.host.quit()
        except (smtplib.SMTPException, OSError):  # already gone: nothing to say goodbye to
            connection.host.close()

    def abort(self) -> None:
        """Drop the connection without a QUIT (its server may be the one not answering)."""
        connection, self.connection = self.connection, None
        if connection is not None and connection.host is not None:
            connection.host.close()


def timed_out(error: BaseException) -> bool:
    """Whether a socket timeout (MAIL_TIMEOUT) is behind the error: smtplib reports one while awaiting a reply as
    `SMTPServerDisconnected`, raised while handling the `TimeoutError`."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def failure_reason(error: BaseException) -> str:
    """The `reason` of mail_send_failures_total: `refused` (the mail server said no: a 4xx/5xx reply), `timeout`
    (it did not answer within MAIL_TIMEOUT) or `error` (anything else: connection refused or dropped, …)."""
    if timed_out(error):
        return "timeout"
    if isinstance(error, (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused)):
        return "refused"
    return "error"


#: Anything shaped like an email address in an SMTP error's text (a refused recipient, the reply that names it).
EMAIL_ADDRESS = re.compile(r"[^\s<>()\[\]{},;:'\"]+@[^\s<>()\[\]{},;:'\"]+")
ADDRESS = "[address]"


def loggable_error(error: BaseException, recipient: str | None) -> dict[str, Any]:
    """A failed delivery's error as its log line carries it: the SMTP reply's code (`smtp_code`, when there is one)
    and the error's text with every address replaced by "[address]". A refused recipient's error
    (`SMTPRecipientsRefused`) is keyed by the address and the server's reply often names it again: personal data,
    which the logs keep out (the mail's id and kind identify it; its outbox row keeps the full error)."""
    code: int | None = None
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        replies = list(error.recipients.values())
        code = replies[0][0] if replies else None
        text = "; ".join(f"{reply_code} {_text(reply)}" for reply_code, reply in replies)
    elif isinstance(error, smtplib.SMTPResponseException):  # its args may name the sender (SMTPSenderRefused)
        code, text = error.smtp_code, _text(error.smtp_error)
    else:
        text = str(error)
    if recipient:
        text = text.replace(recipient, ADDRESS)
    logged: dict[str, Any] = {"error": f"{type(error).__name__}: {EMAIL_ADDRESS.sub(ADDRESS, text)}"[:500]}
    if code is not None:
        logged["smtp_code"] = code
    return logged


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def refused_for_good(error: Exception) -> bool:
    """Whether the mail server refused every recipient with a permanent (5xx) reply: the address does not exist or
    takes no mail, and trying again cannot help. A refused sender, a failed log-in or a refused body say the
    configuration or the server is wrong: those mails wait for it to be put right."""
    if not isinstance(error, smtplib.SMTPRecipientsRefused) or not error.recipients:
        return False
    return all(500 <= code < 600 for code, _ in error.recipients.values())


def deliver_pending(limit: int = 50) -> int:
    """Send pending mails now, in this process; returns how many were sent."""
    return deliver_batch(limit).sent


def deliver_queued(sender, change: SyncResult, writes: CacheWrites | None = None, **_) -> None:
    """`subscription_changed` receiver: have what the committed change queued delivered, never inside the request.

    The caches the receivers before this one drop (`writes`) are dropped first: a delivery made here, outside a
    request, may wait on SMTP, and the user's next page must not wait with it."""
    if not change.mail_queued:
        return
    queue = task_queue()
    if writes is not None and queue is not None and writes.shares_server(queue.connection):
        # The flag's SET NX joins the cache writes' pipeline (one round trip for all); the job, when the flag was not
        # set, follows in a second round trip once they are sent: the worker cannot see it before the caches are
        # dropped.
        writes.set_flag(
            DELIVERY_PENDING_KEY, DELIVERY_PENDING_TTL, then=lambda: enqueue_delivery(queue), on_failure=enqueue_failed
        )
        return
    if writes is not None:
        writes.send()
    request_delivery()


#: `mail_delivery_pending`, set (NX) by the commit that enqueues a delivery job and deleted by the job as it starts,
#: before it reads the outbox: while it is set, a job is waiting that will send every mail committed by then, and a
#: commit enqueues none. It expires on its own, so a job lost with its flag set (Redis flushed, a worker killed
#: before the job started) holds the next one back for DELIVERY_PENDING_TTL at most (the scheduled sweep sends what
#: waits meanwhile). A job that failed and waits for its retry sets it again until then (app/tasks.py).
DELIVERY_PENDING_KEY = "mail_delivery_pending"
DELIVERY_PENDING_TTL = 30


def enqueue_delivery(queue: Queue) -> None:
    """Enqueue a delivery job, its flag just set (RQ's writes in one pipeline: one round trip), never raising. A
    failure deletes the flag: set without its job, it would hold the next commits' jobs back until it expires."""
    try:
        pipeline = queue.connection.pipeline()
        queue.enqueue_call(DELIVER_TASK, timeout=120, failure_ttl=7 * 24 * 3600, retry=MAIL_RETRY, pipeline=pipeline)
        pipeline.execute()
    except RedisError as error:
        enqueue_failed(error)
        try:
            queue.connection.delete(DELIVERY_PENDING_KEY)
        except RedisError:
            pass  # it expires on its own


def enqueue_failed(error: Exception) -> None:
    """The rows wait in the outbox: the scheduled sweep sends them once Redis is back."""
    log.warning("mail_enqueue_failed", error=f"{type(error).__name__}: {error}")


def request_delivery() -> None:
    """See that a delivery job will send what is committed so far; without a queue, deliver after the response (or
    now, outside any request). `SET mail_delivery_pending 1 NX EX 30` (one round trip): set already, a job is waiting
    and nothing more is needed; set now, the job is enqueued (a second round trip)."""
    queue = task_queue()
    if queue is None:
        deliver_after_response()
        return
    try:
        if not queue.connection.set(DELIVERY_PENDING_KEY, "1", nx=True, ex=DELIVERY_PENDING_TTL):
            return
    except RedisError as error:
        enqueue_failed(error)
        return
    enqueue_delivery(queue)


def clear_delivery_flag() -> None:
    """Delete the `mail_delivery_pending` flag (the delivery job, before it reads the outbox), never raising."""
    queue = task_queue()
    if queue is None:
        return
    try:
        queue.connection.delete(DELIVERY_PENDING_KEY)
    except RedisError as error:  # it expires on its own
        log.warning("mail_delivery_flag_not_cleared", error=f"{type(error).__name__}: {error}")


def hold_delivery_flag(seconds: int) -> None:
    """Set the `mail_delivery_pending` flag for `seconds` (a failed job, until its retry), never raising."""
    queue = task_queue()
    if queue is None:
        return
    try:
        queue.connection.set(DELIVERY_PENDING_KEY, "1", ex=seconds)
    except RedisError as error:  # new mail then enqueues a job of its own
        log.warning("mail_delivery_flag_not_set", error=f"{type(error).__name__}: {error}")


def deliver_after_response() -> None:
    """The queue-less default: the request's process sends once its response has gone out."""
    if not has_request_context():
        deliver_pending()
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    @after_this_request
    def deliver_when_closed(response: Response) -> Response:
        response.call_on_close(lambda: deliver_in(app))
        return response


def deliver_in(app: Flask) -> None:
    """Deliver in an app context of its own (the request's is gone once the response is closed)."""
    with app.app_context():
        try:
            deliver_pending()
        except Exception as error:  # the database may be down: the rows stay pending for the next delivery
            db.session.rollback()
            log.warning("mail_delivery_failed", error=f"{type(error).__name__}: {error}")


#: A link's inline style (mail clients drop style sheets): the brand's colour, and a long address (a signed link)
#: broken anywhere rather than widening the mail past a phone's screen.
LINK_STYLE = "color:#4f46e5;word-break:break-all;"


def html_body(subject: str, body: str) -> str:
    """The HTML alternative of a mail: its text paragraphs in the one billing layout (mail/layout.html), the
    sign-off left to the layout, addresses made links. Each paragraph is escaped and linked here (`urlize`
    escapes its text), then styled: in the template, Jinja's `replace` on urlize's markup escaped the inserted
    text, and every mail showed `<a style=…>` as words instead of a link."""
    paragraphs = [" ".join(part.split()) for part in body.strip().split("\n\n") if part.strip()]
    paragraphs = [
        Markup(urlize(p, target="_blank").replace("<a ", f'<a style="{LINK_STYLE}" '))
        for p in paragraphs
        if not p.startswith("— ")
    ]
    return render_template("mail/layout.html", subject=subject, paragraphs=paragraphs)


def send(row: MailOutbox, smtp: SmtpBatch) -> bool:
    """Deliver one mail (on the batch's connection, `smtp`): True when the mail server took it, False when it went to
    the folder (no MAIL_SERVER) or nowhere (MAIL_SUPPRESS_SEND)."""
    if not current_app.config.get("MAIL_SERVER"):
        if current_app.config.get("MAIL_SUPPRESS_SEND"):
            return (
                False  # as Flask-Mail does with SMTP: nothing leaves, not even to the folder (scripts/screenshots.py)
            )
        write_to_folder(row)
        return False
    smtp.send(
        Message(subject=row.subject, recipients=[row.recipient], body=row.body, html=html_body(row.subject, row.body))
    )
    return True


def write_to_folder(row: MailOutbox) -> None:
    """Development: the mail as an .eml file under instance/mail/ (open it with any mail client), and printed.

    Named by the time it was written, then its outbox id: another database (a second checkout's, a production-mode
    trial) numbers its mails from 1 again, and its files must not replace these. The text part is 8bit, so a link in
    it can be copied from the file as it is (quoted-printable cut long links with `=` line breaks)."""
    folder = Path(current_app.instance_path) / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    message = EmailMessage()
    message["From"] = current_app.config.get("MAIL_DEFAULT_SENDER") or "billing@localhost"
    message["To"] = row.recipient
    message["Subject"] = row.subject
    message.set_content(row.body, cte="8bit")
    message.add_alternative(html_body(row.subject, row.body), subtype="html")
    stem = f"{utcnow():%Y%m%d-%H%M%S}-{row.id:06d}-{row.kind}"
    path, copy = folder / f"{stem}.eml", 1
    while path.exists():  # the same second, the same id: a second database's mail
        copy += 1
        path = folder / f"{stem}-{copy}.eml"
    path.write_bytes(bytes(message))
    if current_app.config["ENVIRONMENT"] == "production":
        # A production without MAIL_SERVER (`flask doctor` says ✗): the body holds reset and verification links,
        # which must not reach the process's output and its log collector; one line says where the mail went.
        log.warning("mail_written_to_folder", kind=row.kind, mail_id=row.id, path=str(path))
        return
    log.info("mail_written_to_folder", kind=row.kind, mail_id=row.id, path=str(path))
    print(f"--- mail to {row.recipient}: {row.subject}\n{row.body}\n---")


def billing_url() -> str:
    """The billing page's address, also outside a request (the CLI's nightly sync)."""
    return external_url("billing.show_billing")
