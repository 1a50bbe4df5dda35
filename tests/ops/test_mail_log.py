"""`mail_sent` in the log means the mail server took the mail: a mail only written to instance/mail/ (no MAIL_SERVER)
logs `mail_written_to_folder` instead — a production grepping for `mail_sent` was told its unsent mails went out."""

from __future__ import annotations

from tests.billing.test_mail_folder import folder_app, mail_verification


def mail_events(log_json) -> list[dict]:
    return [r for r in log_json.records() if r["event"].startswith("mail_")]


def test_a_mail_written_to_the_folder_is_not_logged_as_sent(
    seeded, migrated_database, redis_url, stripe_emulator, tmp_path, log_json
):
    app = folder_app(migrated_database, redis_url, stripe_emulator.url, tmp_path)
    app.config["ENVIRONMENT"] = "production"
    mail_verification(app, "prod@example.com")
    events = mail_events(log_json)
    assert [(e["event"], e["level"]) for e in events] == [("mail_written_to_folder", "warning")], events
    assert events[0]["kind"] == "verify_email" and events[0]["path"].endswith("-verify_email.eml")

    app.config["ENVIRONMENT"] = "development"
    mail_verification(app, "dev@example.com")
    assert [e["event"] for e in mail_events(log_json)][1:] == ["mail_written_to_folder"]
