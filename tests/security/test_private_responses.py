"""Pages and API answers about someone's account carry `Cache-Control: no-store` (a shared computer's Back button
after log-out, or a proxy, must not show them); public pages and static files keep their caching."""

from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.services import accounts
from tests.factories import UserFactory

#: Pages of a logged-in admin on the Free plan: its own pages, a plan-gated page (403) and a missing one (404).
PRIVATE_PAGES = ("/account", "/billing", "/strategies/", "/alerts/", "/admin", "/pricing", "/no-such-page")


def test_every_logged_in_page_is_no_store(seeded, client, auth):
    auth.signup("private@example.com")
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET is_admin = true"))
        db.session.commit()
        db.session.remove()
    for path in PRIVATE_PAGES:
        response = client.get(path)
        assert response.status_code in (200, 403, 404), (path, response.status_code)
        assert response.headers.get("Cache-Control") == "no-store", (path, response.headers.get("Cache-Control"))


def test_the_log_in_answer_itself_is_no_store(seeded, client, auth):
    auth.signup("again@example.com")
    auth.logout()
    response = auth.login("again@example.com")
    assert response.status_code == 302
    assert response.headers.get("Cache-Control") == "no-store"


def test_public_pages_and_static_files_keep_their_caching(seeded, client, auth):
    for path in ("/pricing", "/login", "/static/css/admin.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "no-store" not in (response.headers.get("Cache-Control") or ""), path
    auth.signup("styles@example.com")
    logged_in = client.get("/static/css/admin.css")
    assert logged_in.headers.get("Cache-Control") == client.get("/static/css/admin.css").headers.get("Cache-Control")
    assert "no-store" not in (logged_in.headers.get("Cache-Control") or "")


def test_after_log_out_the_pricing_page_is_public_again(seeded, client, auth):
    auth.signup("leaving@example.com")
    auth.logout()
    client.get("/pricing")  # shows "You have been logged out." (a flashed message: no-store, as any)
    assert "no-store" not in (client.get("/pricing").headers.get("Cache-Control") or "")


def test_api_token_and_tokened_answers_are_no_store(seeded, client):
    with seeded.app_context():
        UserFactory(email="api@example.com")
    issued = client.post("/api/v1/auth/token", json={"email": "api@example.com", "password": "correct horse"})
    assert issued.status_code == 200
    assert issued.headers.get("Cache-Control") == "no-store"
    refreshed = client.post(
        "/api/v1/auth/refresh", headers={"Authorization": f"Bearer {issued.get_json()['refresh_token']}"}
    )
    assert refreshed.status_code == 200 and refreshed.headers.get("Cache-Control") == "no-store"
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {issued.get_json()['access_token']}"})
    assert me.status_code == 200 and me.headers.get("Cache-Control") == "no-store"
    refused = client.post("/api/v1/auth/token", json={"email": "api@example.com", "password": "wrong"})
    assert refused.status_code == 401 and refused.headers.get("Cache-Control") == "no-store"


def test_a_visitors_page_showing_a_flashed_message_is_no_store(seeded, client, auth):
    """The log-in page after sign-up names the address just signed up with: a shared computer's Back button must
    not show it to the next person; the same page without a message keeps its caching."""
    signed_up = client.post(
        "/signup",
        data={
            "email": "someone@example.com",
            "password": "correct horse",
            "confirm": "correct horse",
            "csrf_token": auth.token("/signup"),
        },
    )
    signed_up.close()
    page = client.get("/login")
    assert "someone@example.com" in page.get_data(as_text=True)
    assert page.headers.get("Cache-Control") == "no-store"
    assert "no-store" not in (client.get("/login").headers.get("Cache-Control") or "")


def test_a_failed_log_in_repeats_the_address_and_is_no_store(seeded, client, auth):
    """The 400 after a wrong password shows the typed address again: a shared computer's Back button, or a proxy,
    must not keep it; the visitor's pricing and log-in pages, asked for by the same browser, keep their caching."""
    auth.signup("typed@example.com")
    auth.logout()
    refused = auth.login("typed@example.com", "not the password")
    assert refused.status_code == 400
    assert "typed@example.com" in refused.get_data(as_text=True)
    assert refused.headers.get("Cache-Control") == "no-store"
    for path in ("/pricing", "/login"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "no-store" not in (page.headers.get("Cache-Control") or ""), (path, page.headers.get("Cache-Control"))


def test_every_answer_to_a_credentials_form_is_no_store(seeded, client, auth):
    """Sign-up, log-in and password-reset POSTs, refused or not, and even without a cookie (the CSRF refusal)."""
    answers = {
        "sign-up refused": client.post(
            "/signup",
            data={
                "email": "mine@example.com",
                "password": "short",
                "confirm": "other",
                "csrf_token": auth.token("/signup"),
            },
        ),
        "reset link asked": client.post(
            "/forgot-password", data={"email": "mine@example.com", "csrf_token": auth.token("/forgot-password")}
        ),
        "reset link refused": client.post(
            "/forgot-password", data={"email": "not an address", "csrf_token": auth.token("/forgot-password")}
        ),
    }
    client.delete_cookie("session")
    answers["log-in without a cookie"] = client.post("/login", data={"email": "mine@example.com", "password": "x"})
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "sign-up refused": 400,
        "reset link asked": 302,
        "reset link refused": 400,
        "log-in without a cookie": 400,
    }
    for name, response in answers.items():
        response.close()
        assert response.headers.get("Cache-Control") == "no-store", (name, response.headers.get("Cache-Control"))
    assert "no-store" not in (client.get("/pricing").headers.get("Cache-Control") or "")


def test_choosing_a_new_password_is_no_store(seeded, client, auth):
    with seeded.app_context():
        token = accounts.password_reset_token(UserFactory(email="forgetful@example.com"))
    path = f"/reset-password/{token}"
    refused = client.post(path, data={"password": "short", "confirm": "short", "csrf_token": auth.token(path)})
    assert refused.status_code == 400
    assert refused.headers.get("Cache-Control") == "no-store"
    assert "no-store" not in (client.get("/pricing").headers.get("Cache-Control") or "")
