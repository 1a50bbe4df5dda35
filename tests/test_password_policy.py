"""New passwords as NIST SP 800-63B asks: not common (the bundled list, `app/data/common-passwords.txt`), not one
repeated character or a simple sequence, not the account's email or its name: refused with the field's message,
and nothing changed, wherever a password is chosen (sign-up, reset, change, `flask users create`). Passwords
chosen before keep working at log-in."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import MailOutbox, User
from app.services.accounts import (
    AccountError,
    check_new_password,
    common_passwords,
    find_user_by_email,
    password_reset_token,
)
from tests.conftest import csrf_token_from
from tests.factories import UserFactory

EMAIL = "jane.trader@example.com"
GOOD = "correct horse battery"
COMMON_PASSWORD_MESSAGE = "This password is one of the most common ones and easy to guess: choose another."
SIMPLE_PASSWORD_MESSAGE = (
    "This password is only repeated or consecutive characters (like aaaaaaaa, abcd1234 or 87654321) and easy to "
    "guess: choose another."
)
EMAIL_PASSWORD_MESSAGE = (
    "This password contains your email address (or the part before the @) and is easy to guess: choose another."
)

#: (password, the message it is refused with) for an account whose email is EMAIL.
WEAK = [
    ("password", COMMON_PASSWORD_MESSAGE),
    ("PassWord", COMMON_PASSWORD_MESSAGE),
    ("12345678", COMMON_PASSWORD_MESSAGE),
    ("Password1!", COMMON_PASSWORD_MESSAGE),  # a listed one with digits or symbols at its ends
    ("2024football", COMMON_PASSWORD_MESSAGE),
    ("aaaaaaaa", SIMPLE_PASSWORD_MESSAGE),
    ("ZZZZZZZZZZZZ", SIMPLE_PASSWORD_MESSAGE),
    ("abcdefgh", SIMPLE_PASSWORD_MESSAGE),
    ("87654321", SIMPLE_PASSWORD_MESSAGE),
    ("aaaa9999", SIMPLE_PASSWORD_MESSAGE),
    ("1234wxyz", SIMPLE_PASSWORD_MESSAGE),
    ("abababab", SIMPLE_PASSWORD_MESSAGE),
    ("123123123", SIMPLE_PASSWORD_MESSAGE),
    ("jane.trader@example.com", EMAIL_PASSWORD_MESSAGE),
    ("JANE.TRADER@EXAMPLE.COM", EMAIL_PASSWORD_MESSAGE),
    ("my jane.trader@example.com!", EMAIL_PASSWORD_MESSAGE),
    ("jane.trader1990", EMAIL_PASSWORD_MESSAGE),
    ("JaneTrader!!", EMAIL_PASSWORD_MESSAGE),  # the name without its dot
]
STRONG = [GOOD, "a much better secret", "Tr0ub4dor&3", "correct horse", "jane likes trading", "abcd efgh ijkl"]


@pytest.mark.parametrize("password, message", WEAK)
def test_a_weak_new_password_is_refused_saying_why(password, message):
    with pytest.raises(AccountError) as refused:
        check_new_password(password, EMAIL)
    assert refused.value.code == "weak_password" and refused.value.message == message


@pytest.mark.parametrize("password", STRONG)
def test_a_good_new_password_is_taken(password):
    check_new_password(password, EMAIL)


def test_a_short_email_name_is_not_looked_for_inside_passwords():
    check_new_password("jon likes trading", "jon@example.com")  # "jon" is in many a good password
    with pytest.raises(AccountError):
        check_new_password("jon@example.com", "jon@example.com")


def test_the_list_is_read_once_per_process_as_a_frozenset():
    common = common_passwords()
    assert isinstance(common, frozenset) and common_passwords() is common
    assert len(common) > 10_000 and {"password", "12345678", "iloveyou", "qwertyuiop"} <= common
    assert not any(line.startswith("#") for line in common)  # its header is not a password


def signup_form(client, auth, email: str, password: str):
    response = client.post(
        "/signup",
        data={"email": email, "password": password, "confirm": password, "csrf_token": auth.token("/signup")},
    )
    response.close()
    return response


def field_error(html: str, message: str) -> bool:
    return f'<div class="invalid-feedback" id="password-error">{message}</div>' in html


@pytest.mark.parametrize("password, message", [WEAK[5], WEAK[8], WEAK[13], WEAK[17]])
def test_sign_up_refuses_a_weak_password_on_its_field_and_creates_nothing(seeded, client, auth, password, message):
    response = signup_form(client, auth, EMAIL, password)
    assert response.status_code == 400
    assert field_error(response.get_data(as_text=True), message)
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MailOutbox)) == 0
    assert signup_form(client, auth, EMAIL, GOOD).status_code == 302


def test_sign_up_with_a_known_address_refuses_a_weak_password_alike(seeded, client, auth):
    """The check reads only what was typed: a known address gets the same refusal (no enumeration)."""
    with seeded.app_context():
        UserFactory(email=EMAIL)
    response = signup_form(client, auth, EMAIL, "JaneTrader!!")
    assert response.status_code == 400 and field_error(response.get_data(as_text=True), EMAIL_PASSWORD_MESSAGE)
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MailOutbox)) == 0  # no notice either


def test_a_reset_refuses_a_weak_password_and_the_link_still_works(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email=EMAIL)
        link = "/reset-password/" + password_reset_token(find_user_by_email(EMAIL))
        before = find_user_by_email(EMAIL).password_hash
    for password, message in (WEAK[6], WEAK[15], WEAK[0]):
        token = csrf_token_from(client.get(link).get_data(as_text=True))
        response = client.post(link, data={"password": password, "confirm": password, "csrf_token": token})
        assert response.status_code == 400 and field_error(response.get_data(as_text=True), message)
    with seeded.app_context():
        assert find_user_by_email(EMAIL).password_hash == before
    token = csrf_token_from(client.get(link).get_data(as_text=True))
    done = client.post(link, data={"password": GOOD, "confirm": GOOD, "csrf_token": token})
    assert done.status_code == 302 and done.headers["Location"] == "/login"
    assert auth.login(EMAIL, GOOD).status_code == 302


def test_a_password_change_refuses_a_weak_password_and_changes_nothing(seeded, client, auth):
    auth.signup(EMAIL, GOOD)
    for password, message in (WEAK[9], WEAK[16]):
        token = csrf_token_from(client.get("/account").get_data(as_text=True))
        response = client.post(
            "/account/password",
            data={"current": GOOD, "password": password, "confirm": password, "csrf_token": token},
        )
        assert response.status_code == 400 and field_error(response.get_data(as_text=True), message)
    assert client.get("/account").status_code == 200  # still logged in: the session was not replaced
    auth.logout()
    assert auth.login(EMAIL, "aaaa9999").status_code == 400
    assert auth.login(EMAIL, GOOD).status_code == 302


def test_the_operator_cli_refuses_a_weak_password(seeded, runner):
    result = runner.invoke(args=["users", "create", "ops@example.com", "--password", "aaaaaaaa"])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {SIMPLE_PASSWORD_MESSAGE}"
    # Typed at the prompt: refused as it is typed, then asked for again.
    result = runner.invoke(args=["users", "create", "ops@example.com"], input=f"ops@example.com\n{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert f"Error: {EMAIL_PASSWORD_MESSAGE}" in result.output
    assert result.output.count("Password: ") == 2
    with seeded.app_context():
        assert find_user_by_email("ops@example.com").check_password(GOOD)


def test_a_weak_password_chosen_before_still_logs_in(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email=EMAIL, password_hash=generate_password_hash("aaaaaaaa"))
    api = client.post("/api/v1/auth/token", json={"email": EMAIL, "password": "aaaaaaaa"})
    assert api.status_code == 200
    assert auth.login(EMAIL, "aaaaaaaa").headers["Location"] == "/account"
