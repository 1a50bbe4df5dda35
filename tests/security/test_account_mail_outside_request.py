"""The account mails (a password reset link, an email verification link) leave outside the request, as every other
mail does: with a task queue a worker sends them, without one the app's process sends them once the response is
closed. Sent inside the request, SMTP's time (or its failure) was in the answer to "forgot password" for an address
with an account and not for one without: a timing oracle for which emails have an account, and a page that waits
on SMTP."""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db, task_queue
from app.models import MailOutbox
from tests.conftest import Auth, csrf_token_from, make_config
from tests.eventually import eventually
from tests.factories import UserFactory


def closed_port() -> int:
    """A loopback port nothing listens on: SMTP down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def queued_app(seeded, migrated_database, redis_url):
    """The test app with the task queue on and SMTP down (no worker runs: what the request did is all there is)."""
    queued = create_app(
        make_config(
            migrated_database,
            redis_url,
            TASK_QUEUE_URL=redis_url,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(closed_port()),
        )
    )
    with queued.app_context():
        task_queue().empty()
    return queued


def mail_rows(app, kind: str) -> list[tuple[str, int]]:
    with app.app_context():
        rows = db.session.execute(sa.select(MailOutbox.status, MailOutbox.attempts).where(MailOutbox.kind == kind))
        return [tuple(row) for row in rows]


def queued_jobs(app) -> list[str]:
    with app.app_context():
        return [job.func_name for job in task_queue().jobs]


def ask_reset(client, email: str):
    token = csrf_token_from(client.get("/forgot-password").get_data(as_text=True))
    return client.post("/forgot-password", data={"email": email, "csrf_token": token})


def test_a_reset_link_is_handed_to_the_queue_not_sent_in_the_request(queued_app):
    with queued_app.app_context():
        UserFactory(email="reset-queued@example.com")
    response = ask_reset(queued_app.test_client(), "reset-queued@example.com")
    response.close()  # as a WSGI server does once the body is sent
    assert response.status_code == 302
    assert mail_rows(queued_app, "password_reset") == [("pending", 0)]  # SMTP (down) never tried by the request
    assert queued_jobs(queued_app) == ["app.tasks.deliver_mail"]


def test_a_verification_link_is_handed_to_the_queue_not_sent_in_the_request(queued_app):
    response = Auth(queued_app.test_client()).signup("verify-queued@example.com")
    response.close()
    assert response.status_code == 302
    assert mail_rows(queued_app, "verify_email") == [("pending", 0)]
    assert queued_jobs(queued_app) == ["app.tasks.deliver_mail"]


def test_without_a_queue_the_reset_link_leaves_once_the_response_is_closed(seeded, client, smtp_sink):
    with seeded.app_context():
        UserFactory(email="reset-after-close@example.com")
        db.session.remove()
    response = ask_reset(client, "reset-after-close@example.com")
    assert response.status_code == 302
    assert not smtp_sink.subjects("reset-after-close@example.com")  # the answer is out before any SMTP
    response.close()
    assert eventually(lambda: smtp_sink.subjects("reset-after-close@example.com"), 10)
    assert mail_rows(seeded, "password_reset") == [("sent", 1)]
