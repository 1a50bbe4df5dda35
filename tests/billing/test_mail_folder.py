"""Without MAIL_SERVER (a fresh clone), mails are .eml files under instance/mail/: one file per mail that no other
database's mails replace, with links that can be copied from the file as they are; MAIL_SUPPRESS_SEND writes none."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path

from app import create_app
from app.extensions import db
from app.services.accounts import send_verification
from app.services.mail import deliver_pending
from tests.conftest import make_config
from tests.factories import UserFactory


def folder_app(database_url: str, redis_url: str, emulator_url: str, instance: Path, **settings):
    app = create_app(make_config(database_url, redis_url, STRIPE_API_BASE=emulator_url, **settings))
    app.instance_path = str(instance)  # the mail folder of this test alone
    return app


def mail_verification(app, email: str) -> None:
    with app.test_request_context():
        send_verification(UserFactory(email=email))
        deliver_pending()
        db.session.remove()


def test_each_mail_is_a_file_of_its_own_with_links_whole(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path
):
    app = folder_app(migrated_database, redis_url, stripe_emulator.url, tmp_path)
    mail_verification(app, "first@example.com")
    [first] = sorted((tmp_path / "mail").iterdir())
    assert re.fullmatch(r"\d{8}-\d{6}-\d{6}-verify_email\.eml", first.name)
    raw = first.read_bytes()
    link = re.search(rb"http://\S+/verify-email/\S+", raw)
    assert link is not None and b"=\n" not in raw.split(b"\n\n", 1)[1].split(b"--", 1)[0]
    text = message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()
    assert link.group(0).decode() in text  # the raw file's link is the mail's link, whole

    # Another database numbers its mails from 1 again: its mail is added beside, nothing is replaced.
    with app.app_context():
        db.session.execute(db.text("TRUNCATE mail_outbox RESTART IDENTITY"))
        db.session.commit()
    mail_verification(app, "second@example.com")
    files = sorted((tmp_path / "mail").iterdir())
    assert len(files) == 2 and first in files and first.read_bytes() == raw
    assert {message_from_bytes(f.read_bytes())["To"] for f in files} == {"first@example.com", "second@example.com"}


def test_suppressed_mail_writes_no_file(seeded, migrated_database, redis_url, stripe_emulator, tmp_path):
    app = folder_app(migrated_database, redis_url, stripe_emulator.url, tmp_path, MAIL_SUPPRESS_SEND="true")
    mail_verification(app, "quiet@example.com")
    assert not (tmp_path / "mail").exists()


def test_production_without_mail_server_prints_no_mail_body(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, capsys
):
    """The guide names no MAIL_* variable: a production started from it wrote every mail to the folder and printed
    its body — the verification and reset links — to the worker's and server's output, past the log redaction."""
    app = folder_app(migrated_database, redis_url, stripe_emulator.url, tmp_path)
    mail_verification(app, "dev@example.com")
    assert "/verify-email/" in capsys.readouterr().out  # development: printed for the terminal, as the README says
    app.config["ENVIRONMENT"] = "production"
    mail_verification(app, "prod@example.com")
    out = capsys.readouterr()
    assert "/verify-email/" not in out.out + out.err and "prod@example.com" not in out.out
    assert len(list((tmp_path / "mail").iterdir())) == 2  # still kept, for an operator to find
