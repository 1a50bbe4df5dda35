"""Sessions and tokens an attacker cannot keep: a copied cookie dies with log-out, "log out everywhere" and a
password change end every cookie and token, refresh tokens rotate and a reused one revokes its family."""

from __future__ import annotations

import pytest

from tests.conftest import csrf_token_from

PREFIX = "/api/v1"
EMAIL, PASSWORD = "trader@example.com", "correct horse"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def tokens(client, email: str = EMAIL, password: str = PASSWORD) -> dict:
    response = client.post(PREFIX + "/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def refresh(client, refresh_token: str):
    return client.post(PREFIX + "/auth/refresh", headers=bearer(refresh_token))


def copy_of(app, client):
    """Another browser holding a copy of `client`'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def post_on_account(client, path: str, **data):
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def test_a_cookie_copied_before_log_out_opens_nothing_after_it(seeded, client, auth):
    auth.signup()
    thief = copy_of(seeded, client)
    assert thief.get("/account").status_code == 200  # the copy works while the session lives
    auth.logout()
    response = thief.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_log_out_everywhere_ends_every_cookie_and_token(seeded, client, auth):
    auth.signup()
    other_browser = seeded.test_client()
    Auth = type(auth)
    Auth(other_browser).login()
    pair = tokens(seeded.test_client())
    assert other_browser.get("/account").status_code == 200
    assert seeded.test_client().get(PREFIX + "/me", headers=bearer(pair["access_token"])).status_code == 200

    response = post_on_account(client, "/account/logout-everywhere")
    assert response.status_code == 302
    assert client.get("/account").status_code == 302
    assert other_browser.get("/account").status_code == 302
    api = seeded.test_client()
    assert api.get(PREFIX + "/me", headers=bearer(pair["access_token"])).status_code == 401
    assert refresh(api, pair["refresh_token"]).status_code == 401


def test_a_password_change_ends_every_other_session_token_and_cookie_copy_but_keeps_this_browser(seeded, client, auth):
    auth.signup()
    thief = copy_of(seeded, client)
    # The copy shares this browser's session: a second, separate log-in plays the attacker's session.
    attacker = seeded.test_client()
    type(auth)(attacker).login()
    pair = tokens(seeded.test_client())
    response = post_on_account(
        client, "/account/password", current=PASSWORD, password="a much better secret", confirm="a much better secret"
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert client.get("/account").status_code == 200  # this browser stays logged in, in a new session
    # A copy of this browser's cookie taken before the change names the session the change replaced.
    assert thief.get("/account").status_code == 302
    assert attacker.get("/account").status_code == 302
    assert seeded.test_client().get(PREFIX + "/me", headers=bearer(pair["access_token"])).status_code == 401
    auth.logout()
    assert auth.login(EMAIL, "a much better secret").status_code == 302


def test_a_password_change_needs_the_current_password_and_a_good_new_one(seeded, client, auth):
    auth.signup()
    wrong = post_on_account(
        client,
        "/account/password",
        current="not it at all",
        password="a much better secret",
        confirm="a much better secret",
    )
    assert wrong.status_code == 400 and "current password is incorrect" in wrong.get_data(as_text=True)
    common = post_on_account(
        client, "/account/password", current=PASSWORD, password="password123", confirm="password123"
    )
    assert common.status_code == 400 and "most common" in common.get_data(as_text=True)
    auth.logout()
    assert auth.login().status_code == 302  # unchanged


def test_a_refresh_token_works_once_and_its_reuse_revokes_the_family(seeded, client, auth):
    auth.signup()
    auth.logout()
    stolen = tokens(client)
    first = refresh(client, stolen["refresh_token"])
    assert first.status_code == 200
    rotated = first.get_json()
    assert rotated["refresh_token"] != stolen["refresh_token"]
    assert client.get(PREFIX + "/me", headers=bearer(rotated["access_token"])).status_code == 200

    reused = refresh(client, stolen["refresh_token"])  # the copy an attacker kept
    assert reused.status_code == 401 and reused.get_json()["error"] == "invalid_token"
    # The whole family is revoked: the legitimate holder's newer tokens too.
    assert refresh(client, rotated["refresh_token"]).status_code == 401
    assert client.get(PREFIX + "/me", headers=bearer(rotated["access_token"])).status_code == 401
    assert client.get(PREFIX + "/me", headers=bearer(stolen["access_token"])).status_code == 401
    # Another log-in is another family, untouched.
    fresh = tokens(client)
    assert client.get(PREFIX + "/me", headers=bearer(fresh["access_token"])).status_code == 200


@pytest.mark.parametrize("claims", [{}, {"sid": "made-up"}, {"sid": 5}])
def test_a_correctly_signed_token_of_no_live_family_is_401(seeded, client, claims):
    from flask_jwt_extended import create_access_token

    from app.extensions import db
    from tests.factories import UserFactory

    with seeded.app_context():
        user = UserFactory(email="forged@example.com")
        token = create_access_token(identity=str(user.id), additional_claims=claims)
        db.session.remove()
    response = client.get(PREFIX + "/me", headers=bearer(token))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
