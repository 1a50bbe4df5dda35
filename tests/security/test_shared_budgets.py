"""Budgets nobody can spend for others: sign-up and the reset form have no limit shared by the whole site (a few
clients spending it locked everyone out); sign-ups and failed log-ins are also counted per email address typed,
whichever client types it, so one address stays protected however many clients there are."""

from __future__ import annotations

import time

from app.extensions import db
from tests.conftest import csrf_token_from
from tests.factories import UserFactory

PREFIX = "/api/v1"


def sign_up(app, email: str, address: str) -> tuple[int, str]:
    client = app.test_client()
    token = csrf_token_from(client.get("/signup").get_data(as_text=True))
    response = client.post(
        "/signup",
        data={"email": email, "password": "correct horse", "confirm": "correct horse", "csrf_token": token},
        environ_overrides={"REMOTE_ADDR": address},
    )
    response.close()
    return response.status_code, response.get_data(as_text=True)


def ask_reset(app, email: str, address: str) -> int:
    client = app.test_client()
    token = csrf_token_from(client.get("/forgot-password").get_data(as_text=True))
    return client.post(
        "/forgot-password", data={"email": email, "csrf_token": token}, environ_overrides={"REMOTE_ADDR": address}
    ).status_code


def log_in(app, email: str, password: str, address: str):
    client = app.test_client()
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": token},
        environ_overrides={"REMOTE_ADDR": address},
    )


def test_many_clients_signing_up_cannot_lock_out_a_fresh_one(seeded):
    """The attack: distinct addresses from many clients, each within its own budget. An operator's old site-wide
    setting (RATELIMIT_SIGNUP_GLOBAL) is no longer read: it was a budget anyone could spend for everyone."""
    seeded.config["RATELIMIT_SIGNUP_GLOBAL"] = "8 per minute"
    statuses = [sign_up(seeded, f"flood{i}@example.com", f"203.0.113.{i}")[0] for i in range(12)]
    assert statuses == [302] * 12, statuses
    assert sign_up(seeded, "real.person@example.com", "198.51.100.1")[0] == 302


def test_many_clients_asking_for_resets_cannot_lock_out_a_fresh_one(seeded):
    seeded.config["RATELIMIT_ACCOUNT_MAIL_GLOBAL"] = "8 per minute"
    with seeded.app_context():
        UserFactory(email="real.person@example.com")
        db.session.remove()
    statuses = [ask_reset(seeded, f"flood{i}@example.com", f"203.0.113.{i}") for i in range(12)]
    assert statuses == [302] * 12, statuses
    assert ask_reset(seeded, "real.person@example.com", "198.51.100.1") == 302
    # Each client keeps its own budget (RATELIMIT_ACCOUNT_MAIL, 5 per minute).
    assert [ask_reset(seeded, f"again{i}@example.com", "203.0.113.0") for i in range(5)][-1] == 429


def test_one_addresses_sign_ups_are_capped_whoever_sends_them(seeded):
    """RATELIMIT_SIGNUP_EMAIL (10 an hour): each sign-up costs a slow password hash and, once the address has an
    account, a notice to its owner; many clients cannot go on signing up with one address. Another is unaffected."""
    answers = [sign_up(seeded, "Target@Example.com ", f"203.0.113.{i}") for i in range(11)]
    assert [status for status, _ in answers] == [302] * 10 + [429], answers
    assert "Too many attempts. Please wait" in answers[-1][1]
    assert sign_up(seeded, "someone.else@example.com", "203.0.113.200")[0] == 302


def test_failed_log_ins_are_counted_per_email_address_whatever_the_client(seeded):
    """14 wrong passwords for one account from 14 clients: 10 are checked (RATELIMIT_LOGIN_EMAIL, 10 per 15
    minutes), then every attempt with that address is refused as the per-client limit refuses, the right password
    included, and through the API as well; an address no account uses is answered exactly alike."""
    with seeded.app_context():
        UserFactory(email="target@example.com")
        db.session.remove()

    def attempts(email: str) -> list:
        return [log_in(seeded, email, f"guess {i}", f"203.0.113.{i}") for i in range(14)]

    for email in ("target@example.com", "nobody@example.com"):
        answers = attempts(email)
        assert [a.status_code for a in answers] == [400] * 10 + [429] * 4, email
        refused = answers[-1]
        assert "Too many attempts. Please wait 15 minutes and try again." in refused.get_data(as_text=True)
        # The window began at the first attempt: 14 log-ins (each hashes a password) take seconds, more when loaded.
        assert 840 <= int(refused.headers["Retry-After"]) <= 900
    assert log_in(seeded, "TARGET@example.com", "correct horse", "198.51.100.7").status_code == 429
    api = seeded.test_client().post(
        PREFIX + "/auth/token",
        json={"email": "target@example.com", "password": "correct horse"},
        environ_overrides={"REMOTE_ADDR": "198.51.100.8"},
    )
    assert api.status_code == 429 and api.get_json()["error"] == "too_many_requests", api.get_json()
    assert "Retry-After" in api.headers
    with seeded.app_context():
        UserFactory(email="other@example.com")
        db.session.remove()
    assert log_in(seeded, "other@example.com", "correct horse", "203.0.113.1").status_code == 302


def test_an_address_locked_by_failed_log_ins_opens_again_when_the_short_window_ends(seeded):
    seeded.config["RATELIMIT_LOGIN_EMAIL"] = "3 per 5 seconds"
    with seeded.app_context():
        UserFactory(email="target@example.com")
        db.session.remove()
    time.sleep(5 - time.time() % 5 + 0.05)  # at the start of a window: the four attempts fall in one, even loaded
    statuses = [log_in(seeded, "target@example.com", "wrong", f"203.0.113.{i}").status_code for i in range(4)]
    assert statuses == [400, 400, 400, 429], statuses
    time.sleep(5.1)
    assert log_in(seeded, "target@example.com", "correct horse", "198.51.100.9").status_code == 302
