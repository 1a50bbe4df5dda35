"""Web attacks: every form POST without a CSRF token, session fixation, log-in brute force, open redirects, IDOR
on another user's checkout success page."""

from __future__ import annotations

import re

import pytest

PARAMS = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def form_post_rules(app) -> list[str]:
    """Every POST URL of the site outside the JSON API and the webhook (those use tokens and signatures)."""
    prefix = app.config["API_PREFIX"]
    return sorted(
        {
            PARAMS.sub("1", rule.rule)
            for rule in app.url_map.iter_rules()
            if "POST" in rule.methods and not rule.rule.startswith(prefix + "/")
        }
    )


def test_every_form_post_without_a_csrf_token_is_400(seeded, client, auth):
    rules = form_post_rules(seeded)
    assert {"/login", "/signup", "/logout", "/billing/checkout", "/billing/portal", "/billing/cancel"} <= set(rules)
    auth.signup()  # logged in as an admin, so a missing token is the only reason to refuse
    with seeded.app_context():
        import sqlalchemy as sa

        from app.extensions import db

        db.session.execute(sa.text("UPDATE users SET is_admin = true"))
        db.session.commit()
        db.session.remove()
    for path in rules:
        response = client.post(path, data={"plan": "pro", "cycle": "monthly", "email": "x@example.com"})
        assert response.status_code == 400, (path, response.status_code)


def test_log_in_starts_a_new_session_no_fixation(seeded, client, auth):
    auth.signup("fixed@example.com")
    auth.logout()
    with client.session_transaction() as session:
        session["planted"] = "by-the-attacker"
    before = client.get_cookie("session").value
    response = auth.login("fixed@example.com")
    assert response.status_code == 302
    after = client.get_cookie("session").value
    assert after != before
    with client.session_transaction() as session:
        assert "planted" not in session and session.get("_user_id")


def test_log_in_brute_force_is_429(seeded, client, auth):
    auth.signup("target@example.com")
    auth.logout()
    statuses = [auth.login("target@example.com", f"guess-{i}").status_code for i in range(8)]
    assert 429 in statuses and statuses.index(429) <= 5, statuses
    assert auth.login("target@example.com").status_code == 429  # even the right password, until the window passes


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "\\\\evil.example",
    ],
)
def test_open_redirect_through_next_is_refused(seeded, client, auth, target):
    auth.signup("redirect@example.com")
    auth.logout()
    response = auth.login("redirect@example.com", next=target)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith("//") and "evil" not in location


def test_another_users_checkout_success_page_is_404(seeded, client, auth, stripe_emulator):
    from urllib.parse import urlsplit

    from tests.conftest import csrf_token_from

    auth.signup("owner@example.com")
    token = csrf_token_from(client.get("/pricing").get_data(as_text=True))
    response = client.post("/billing/checkout", data={"plan": "pro", "cycle": "monthly", "csrf_token": token})
    session_id = urlsplit(response.headers["Location"]).path.rsplit("/", 1)[-1]
    stripe_emulator.complete_checkout(session_id)
    auth.logout()
    auth.signup("intruder@example.com")
    assert client.get(f"/billing/success?session_id={session_id}").status_code == 404
    assert client.get("/billing/success?session_id=cs_does_not_exist").status_code == 404
