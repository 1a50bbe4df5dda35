"""Sign-up, log-in, log-out: CSRF, bad input, rate limits, redirects; the operator's `flask users create`."""

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog, MailOutbox, User
from tests.factories import UserFactory


def user_count(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count(User.id)))


def test_signup_opens_a_free_account_and_asks_to_check_mail_then_log_in(seeded, client, auth, smtp_sink):
    response = auth.signup("  Trader@Example.COM ", "correct horse")  # the helper then logs in
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    page = client.get("/account").get_data(as_text=True)
    assert "trader@example.com" in page
    assert 'data-testid="current-plan">Free<' in page
    with seeded.app_context():
        user = db.session.scalar(sa.select(User))
        assert user.email == "trader@example.com"
        assert user.password_hash != "correct horse" and user.check_password("correct horse")
        assert db.session.scalar(sa.select(AuditLog.action).where(AuditLog.user_id == user.id)) == "user.created"
        assert db.session.scalars(sa.select(MailOutbox.kind)).all() == ["verify_email"]


def signup_form(client, auth, email: str, password: str = "correct horse"):
    response = client.post(
        "/signup",
        data={"email": email, "password": password, "confirm": password, "csrf_token": auth.token("/signup")},
    )
    response.close()  # the mail leaves once the response is closed
    return response


def test_signup_answers_a_known_address_as_a_new_one_and_mails_its_owner(seeded, client, auth, smtp_sink):
    """No enumeration: the same redirect, the same message, no session either way; the owner gets a notice."""
    with seeded.app_context():
        UserFactory(email="taken@example.com")
    answers = {}
    for email in ("TAKEN@example.com", "fresh@example.com"):
        response = signup_form(client, auth, email)
        page = client.get(response.headers["Location"]).get_data(as_text=True)
        answers[email.lower()] = (
            response.status_code,
            response.headers["Location"],
            client.get("/account").status_code,
        )
        assert f"Check your email: we sent a message to {email.lower()}. Open the link in it, then log in." in page
    assert answers["taken@example.com"] == answers["fresh@example.com"] == (302, "/login", 302)
    assert user_count(seeded) == 2
    with seeded.app_context():
        mails = db.session.execute(sa.select(MailOutbox.recipient, MailOutbox.kind).order_by(MailOutbox.id)).all()
        assert [tuple(m) for m in mails] == [
            ("taken@example.com", "signup_attempt"),
            ("fresh@example.com", "verify_email"),
        ]
        body = db.session.scalar(sa.select(MailOutbox.body).where(MailOutbox.kind == "signup_attempt"))
    assert "http://localhost/login" in body and "http://localhost/forgot-password" in body
    assert auth.login("taken@example.com").headers["Location"] == "/account"


def test_the_notices_to_a_known_address_are_capped_per_account(seeded, client, auth):
    seeded.config["RATELIMIT_SIGNUP"] = "50 per minute"
    with seeded.app_context():
        UserFactory(email="taken@example.com")
    for _ in range(5):
        assert signup_form(client, auth, "taken@example.com").status_code == 302
    with seeded.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MailOutbox)) == 3  # 3 per hour


def test_a_weak_password_is_refused_alike_for_a_known_address(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="taken@example.com")
    for email in ("taken@example.com", "fresh@example.com"):
        response = signup_form(client, auth, email, "password")
        assert response.status_code == 400 and "one of the most common" in response.get_data(as_text=True)
    assert user_count(seeded) == 1


def test_bad_input_shows_the_fields_error_and_creates_nothing(seeded, client, auth):
    cases = [
        ({"email": "not-an-email"}, "Invalid email address."),
        ({"password": "short"}, "Use at least 8 characters."),
        ({"confirm": "something else"}, "Passwords do not match."),
        ({"email": ""}, "This field is required."),
    ]
    for change, message in cases:
        data = {"email": "new@example.com", "password": "correct horse", "confirm": "correct horse", **change}
        response = client.post("/signup", data={**data, "csrf_token": auth.token("/signup")})
        assert response.status_code == 400
        body = response.get_data(as_text=True)
        assert message in body and "is-invalid" in body
    assert user_count(seeded) == 0


def test_forms_without_csrf_are_refused(seeded, client, auth):
    response = client.post(
        "/signup", data={"email": "a@example.com", "password": "correct horse", "confirm": "correct horse"}
    )
    assert response.status_code == 400
    assert user_count(seeded) == 0
    auth.signup()
    assert client.post("/logout").status_code == 400
    assert client.get("/account").status_code == 200  # still logged in


def test_login_and_logout(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    response = auth.login("TRADER@example.com", "correct horse")
    assert response.status_code == 302 and response.headers["Location"] == "/account"
    assert client.get("/account").status_code == 200
    response = auth.logout()
    assert response.status_code == 302
    assert client.get("/account").status_code == 302  # back to the log-in page


def test_wrong_password_says_so_without_telling_which(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    for email, password in (("trader@example.com", "wrong password"), ("nobody@example.com", "correct horse")):
        response = auth.login(email, password)
        assert response.status_code == 400
        assert "Email or password is incorrect." in response.get_data(as_text=True)
    assert client.get("/account").status_code == 302


def test_login_follows_only_same_site_next(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    for target in ("https://evil.example/phish", "//evil.example", "/\\evil.example"):
        response = auth.login(next=target)
        assert response.headers["Location"] == "/account", target
        auth.logout()
    response = auth.login(next="/pricing")
    assert response.headers["Location"] == "/pricing"


def test_login_gets_a_new_session(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    auth.login()
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"]


def test_login_attempts_are_rate_limited(seeded, client, auth):
    statuses = [auth.login("trader@example.com", "wrong password").status_code for _ in range(6)]
    assert statuses[:5] == [400] * 5
    assert statuses[5] == 429
    response = auth.login("trader@example.com", "wrong password")
    assert "Too many attempts" in response.get_data(as_text=True)
    assert "Retry-After" in response.headers


def test_account_page_requires_login(seeded, client):
    response = client.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_operator_creates_users_from_the_cli(seeded, runner):
    result = runner.invoke(args=["users", "create", "Ops@Example.com", "--password", "correct horse", "--admin"])
    assert result.exit_code == 0, result.output
    assert "✓ Created admin user ops@example.com" in result.output
    assert "a link to confirm the email was mailed" in result.output
    result = runner.invoke(args=["users", "create", "ops@example.com", "--password", "correct horse"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: An account with this email already exists."
    result = runner.invoke(args=["users", "create", "x@example.com", "--password", "short"])
    assert result.exit_code == 1 and "at least 8 characters" in result.output
    with seeded.app_context():
        users = db.session.scalars(sa.select(User)).all()
        assert [(u.email, u.is_admin) for u in users] == [("ops@example.com", True)]
        # Checkout asks for a confirmed email, and says a link was sent: it was (sent at once, outside a request).
        mails = db.session.execute(sa.select(MailOutbox.kind, MailOutbox.recipient, MailOutbox.status)).all()
        assert [tuple(m) for m in mails] == [("verify_email", "ops@example.com", "sent")]
