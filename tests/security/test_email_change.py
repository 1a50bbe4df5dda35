"""The login email belongs to the person who proved to own it: Stripe's customer email (set in the Portal or the
Dashboard, unverified) is only the billing email, and the login email changes through a link mailed to the new
address — after the current password, with a notice to the old address, the Stripe customer following."""

from __future__ import annotations

import email
import re
import time

import sqlalchemy as sa
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from app import create_app
from app.extensions import db
from app.models import AuditLog, MailOutbox, User
from app.services.accounts import (
    EMAIL_CHANGE_MAX_AGE,
    EMAIL_CHANGE_SALT,
    EMAIL_TAKEN_MESSAGE,
    password_fingerprint,
)
from app.services.checkout import ensure_customer
from tests.conftest import Auth, csrf_token_from, make_config
from tests.eventually import eventually
from tests.factories import UserFactory
from tests.webhooks.signing import post_event

CHANGE_LINK = re.compile(r"https?://\S+(/confirm-email-change/\S+)")


def customer_updated(customer_id: str, email_address: str | None, name: str | None = "Billing Name") -> dict:
    return {
        "id": f"evt_cu_{time.time_ns()}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "type": "customer.updated",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": {"id": customer_id, "object": "customer", "email": email_address, "name": name}},
    }


def user_row(app, user_id: int) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        db.session.remove()
    return user


def plain_text(message: dict) -> str:
    parts = [p for p in email.message_from_string(message["data"]).walk() if p.get_content_type() == "text/plain"]
    return parts[0].get_payload(decode=True).decode() if parts else ""


def mails_to(smtp_sink, to: str) -> list[str]:
    """The plain-text parts of the mails delivered to `to`, oldest first."""
    return [plain_text(m) for m in smtp_sink.messages if to in m["to"]]


def outbox_report(app, to: str) -> str:
    """What the outbox holds when a mail to `to` did not arrive: each row for `to` (status, attempts, error), and the
    pending rows of other addresses (a delivery takes the least tried first)."""
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                MailOutbox.id,
                MailOutbox.kind,
                MailOutbox.recipient,
                MailOutbox.status,
                MailOutbox.attempts,
                MailOutbox.error,
            ).order_by(MailOutbox.id)
        ).all()
        db.session.remove()
    mine = [
        (i, kind, status, attempts, error) for i, kind, recipient, status, attempts, error in rows if recipient == to
    ]
    others = [
        (i, kind, recipient) for i, kind, recipient, status, *_ in rows if recipient != to and status == "pending"
    ]
    return f"outbox rows for {to} (id, kind, status, attempts, error): {mine}; pending for others: {others}"


def sink_report(smtp_sink) -> str:
    """Whom the SMTP sink got mail for, oldest first."""
    return f"the sink got mail for {[m['to'] for m in smtp_sink.messages]}"


def change_link(smtp_sink, to: str, app) -> str:
    """The path of the newest email-change link mailed to `to` (mail leaves after the response); when none comes,
    the assertion says what the outbox of `app` holds for `to` and what the sink received."""
    arrived = eventually(lambda: any(CHANGE_LINK.search(body) for body in mails_to(smtp_sink, to)), 30)
    assert arrived, f"no link to {to} within 30 s: {outbox_report(app, to)}; {sink_report(smtp_sink)}"
    return [CHANGE_LINK.search(body).group(1) for body in mails_to(smtp_sink, to) if CHANGE_LINK.search(body)][-1]


def ask_change(client, new_email: str, password: str = "correct horse"):
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    response = client.post(
        "/account/email", data={"new_email": new_email, "current_password": password, "csrf_token": token}
    )
    response.close()  # as a WSGI server does once the body is sent: the mail goes out now
    return response


def signed_up(client, address: str) -> int:
    assert Auth(client).signup(address).status_code == 302
    with client.application.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == address))
        db.session.remove()
    return user_id


# ---------------------------------------------------------------------------------------------------------------
# Stripe's customer email is the billing email
# ---------------------------------------------------------------------------------------------------------------


def test_customer_updated_with_another_address_sets_the_billing_email_and_no_login(seeded, client, auth):
    with seeded.app_context():
        attacker = UserFactory(email="attacker@example.com", stripe_customer_id="cus_attacker")
        UserFactory(email="victim@example.com")
        attacker_id = attacker.id
        db.session.remove()
    secret = seeded.config["STRIPE_WEBHOOK_SECRET"]
    # An address of another account, then one of a person without an account: neither becomes a login.
    for taken in ("victim@example.com", "Someone.Else@example.com"):
        assert post_event(client, customer_updated("cus_attacker", taken), secret).get_json()["status"] == "processed"
        user = user_row(seeded, attacker_id)
        assert (user.email, user.billing_email, user.name) == ("attacker@example.com", taken, "Billing Name")
    assert auth.login("attacker@example.com").status_code == 302
    auth.logout()
    assert auth.login("victim@example.com").status_code == 302
    auth.logout()
    for address in ("someone.else@example.com", "Someone.Else@example.com"):
        assert auth.login(address).status_code == 400
    with seeded.app_context():
        actions = list(db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == attacker_id)))
        assert "user.email_changed" not in actions and actions.count("customer.email_changed") == 2
        db.session.remove()


def test_an_invalid_email_from_stripe_is_kept_as_billing_data_only(seeded, client, auth):
    with seeded.app_context():
        user_id = UserFactory(email="trader@example.com", stripe_customer_id="cus_trader").id
        db.session.remove()
    secret = seeded.config["STRIPE_WEBHOOK_SECRET"]
    odd = "not an address <script>"
    assert post_event(client, customer_updated("cus_trader", odd), secret).get_json()["status"] == "processed"
    user = user_row(seeded, user_id)
    assert (user.email, user.billing_email) == ("trader@example.com", odd)
    assert auth.login("trader@example.com").status_code == 302
    page = client.get("/account").get_data(as_text=True)
    assert 'data-testid="billing-email"' in page and "Billing email (from Stripe)" in page
    assert "not an address &lt;script&gt;" in page and "<script>" not in page.split("</head>")[1]
    token = client.post("/api/v1/auth/token", json={"email": "trader@example.com", "password": "correct horse"})
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token.get_json()['access_token']}"}).get_json()
    assert (me["email"], me["billing_email"]) == ("trader@example.com", odd)  # the API shows it, read-only
    # Stripe clearing the email clears the billing email only; the same address as the login shows no second line.
    post_event(client, customer_updated("cus_trader", None), secret)
    assert user_row(seeded, user_id).billing_email is None
    post_event(client, customer_updated("cus_trader", "trader@example.com"), secret)
    assert 'data-testid="billing-email"' not in client.get("/account").get_data(as_text=True)


# ---------------------------------------------------------------------------------------------------------------
# Changing the login email
# ---------------------------------------------------------------------------------------------------------------


def test_the_login_email_changes_by_the_link_mailed_to_the_new_address(seeded, client, stripe_emulator, smtp_sink):
    user_id = signed_up(client, "old@example.com")
    with seeded.app_context():
        customer_id = ensure_customer(user_id)
        db.session.remove()
    other = seeded.test_client()
    assert Auth(other).login("old@example.com").status_code == 302

    response = ask_change(client, "New@Example.com")
    assert response.status_code == 302
    assert "We sent a link to new@example.com" in client.get("/account").get_data(as_text=True)
    link = change_link(smtp_sink, "new@example.com", seeded)
    assert eventually(lambda: any("new@example.com" in body for body in mails_to(smtp_sink, "old@example.com")))
    notice = [body for body in mails_to(smtp_sink, "old@example.com") if "new@example.com" in body][-1]
    assert "confirm-email-change" not in notice  # the old address is told, it cannot confirm
    assert user_row(seeded, user_id).email == "old@example.com"  # nothing changes until the link is opened
    assert other.get("/account").status_code == 200

    opened = client.get(link, follow_redirects=True)
    assert "Your login email is now new@example.com" in opened.get_data(as_text=True)
    page = client.get("/account").get_data(as_text=True)  # this browser's session is kept
    assert 'data-testid="email-verified"' in page and "new@example.com" in page
    assert 'data-testid="billing-email"' not in page
    assert other.get("/account").status_code == 302  # every other session ended
    user = user_row(seeded, user_id)
    assert (user.email, user.billing_email) == ("new@example.com", "new@example.com")
    assert stripe_emulator.client().v1.customers.retrieve(customer_id).email == "new@example.com"

    Auth(client).logout()
    assert Auth(client).login("old@example.com").status_code == 400
    assert Auth(client).login("new@example.com").status_code == 302
    with seeded.app_context():
        actions = list(db.session.scalars(sa.select(AuditLog.action).where(AuditLog.user_id == user_id)))
        assert "user.email_change_requested" in actions and "user.email_changed" in actions
        db.session.remove()


def test_a_change_link_is_refused_when_reused_tampered_expired_or_superseded(seeded, client, smtp_sink):
    user_id = signed_up(client, "first@example.com")
    assert ask_change(client, "second@example.com").status_code == 302
    assert ask_change(client, "third@example.com").status_code == 302
    to_second = change_link(smtp_sink, "second@example.com", seeded)
    to_third = change_link(smtp_sink, "third@example.com", seeded)

    tampered = to_second[:-3] + ("AAA" if not to_second.endswith("AAA") else "BBB")
    for path in (tampered, "/confirm-email-change/not-a-token"):
        refused = client.get(path, follow_redirects=True).get_data(as_text=True)
        assert "invalid, used or expired" in refused
    assert user_row(seeded, user_id).email == "first@example.com"

    client.get(to_second)
    assert user_row(seeded, user_id).email == "second@example.com"
    for path in (to_second, to_third):  # used; bound to the email it replaced, which has changed
        refused = client.get(path, follow_redirects=True).get_data(as_text=True)
        assert "invalid, used or expired" in refused
    assert user_row(seeded, user_id).email == "second@example.com"

    with seeded.app_context():
        user = db.session.get(User, user_id)

        class PastSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time()) - EMAIL_CHANGE_MAX_AGE - 5

        payload = {
            "user": user.id,
            "from": user.email,
            "to": "late@example.com",
            "password": password_fingerprint(user),
        }
        expired = URLSafeTimedSerializer(seeded.config["SECRET_KEY"], salt=EMAIL_CHANGE_SALT, signer=PastSigner).dumps(
            payload
        )
        db.session.remove()
    assert EMAIL_CHANGE_MAX_AGE <= 3600
    refused = client.get(f"/confirm-email-change/{expired}", follow_redirects=True).get_data(as_text=True)
    assert "invalid, used or expired" in refused
    assert user_row(seeded, user_id).email == "second@example.com"


def test_a_password_change_kills_a_pending_change_link(seeded, client, smtp_sink):
    user_id = signed_up(client, "owner@example.com")
    assert ask_change(client, "intruder@example.com").status_code == 302
    link = change_link(smtp_sink, "intruder@example.com", seeded)
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    data = {"current": "correct horse", "password": "another secret", "confirm": "another secret", "csrf_token": token}
    assert client.post("/account/password", data=data).status_code == 302
    assert "invalid, used or expired" in client.get(link, follow_redirects=True).get_data(as_text=True)
    assert user_row(seeded, user_id).email == "owner@example.com"


def test_signing_out_everywhere_kills_a_pending_change_link(seeded, client, smtp_sink):
    """The notice to the old address says "Sign out everywhere" makes the link useless: it must."""
    user_id = signed_up(client, "owner@example.com")
    assert ask_change(client, "intruder@example.com").status_code == 302
    link = change_link(smtp_sink, "intruder@example.com", seeded)
    assert eventually(lambda: any("Sign out everywhere" in body for body in mails_to(smtp_sink, "owner@example.com")))
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    assert client.post("/account/logout-everywhere", data={"csrf_token": token}).status_code == 302
    assert "invalid, used or expired" in client.get(link, follow_redirects=True).get_data(as_text=True)
    assert Auth(client).login("owner@example.com").status_code == 302  # a new log-in does not revive it
    assert "invalid, used or expired" in client.get(link, follow_redirects=True).get_data(as_text=True)
    assert user_row(seeded, user_id).email == "owner@example.com"

    # A change asked for after signing out everywhere works, though other log-ins came and went meanwhile.
    assert ask_change(client, "moved@example.com").status_code == 302
    fresh = change_link(smtp_sink, "moved@example.com", seeded)
    Auth(seeded.test_client()).login("owner@example.com")
    assert "Your login email is now moved@example.com" in client.get(fresh, follow_redirects=True).get_data(
        as_text=True
    )
    assert user_row(seeded, user_id).email == "moved@example.com"


def test_an_address_another_account_uses_is_answered_alike_and_its_owner_told(seeded, client, smtp_sink):
    """Any visitor can open an account: a refusal here told anyone which addresses have one. The answer is the one
    a free address gets; the address's owner is told that nothing changed (no link, no name of the requester), and
    the requester's current address gets its usual notice."""
    signed_up(client, "mine@example.com")
    other = seeded.test_client()
    signed_up(other, "taken@example.com")
    smtp_sink.messages.clear()

    for address in ("Taken@example.com", "unused@example.com"):
        answer = ask_change(client, address)
        assert answer.status_code == 302 and answer.headers["Location"] == "/account"
        page = client.get("/account").get_data(as_text=True)
        assert f"We sent a link to {address.lower()}: open it within an hour" in page
        assert EMAIL_TAKEN_MESSAGE not in page
    assert eventually(lambda: len(mails_to(smtp_sink, "taken@example.com")) == 1, 30), sink_report(smtp_sink)
    [notice] = mails_to(smtp_sink, "taken@example.com")
    assert "It already logs in to an account, so nothing changed" in notice
    assert not CHANGE_LINK.search(notice) and "mine@example.com" not in notice
    assert eventually(lambda: len(mails_to(smtp_sink, "mine@example.com")) == 2, 30), sink_report(smtp_sink)
    wrong = ask_change(client, "free@example.com", password="not my password")
    assert wrong.status_code == 400 and "The current password is incorrect." in wrong.get_data(as_text=True)
    assert 'data-testid="account-email">mine@example.com' in client.get("/account").get_data(as_text=True)
    smtp_sink.messages.clear()

    # Taken between the request and the link: refused when the link is opened.
    assert ask_change(client, "free@example.com").status_code == 302
    link = change_link(smtp_sink, "free@example.com", seeded)
    signed_up(seeded.test_client(), "free@example.com")
    opened = client.get(link, follow_redirects=True).get_data(as_text=True)
    assert EMAIL_TAKEN_MESSAGE in opened
    assert 'data-testid="account-email">mine@example.com' in client.get("/account").get_data(as_text=True)


def test_change_requests_need_the_csrf_token_and_are_rate_limited(seeded, client, smtp_sink):
    signed_up(client, "busy@example.com")
    forged = client.post("/account/email", data={"new_email": "x@example.com", "current_password": "correct horse"})
    assert forged.status_code == 400
    statuses = [ask_change(client, f"busy{i}@example.com", password="wrong guess").status_code for i in range(7)]
    assert statuses[:4] == [400] * 4 and 429 in statuses[4:], statuses  # RATELIMIT_ACCOUNT_MAIL: 5 per minute
    assert not [m for m in smtp_sink.messages if "busy0@example.com" in m["to"]]


def test_stripe_out_of_reach_leaves_the_email_unchanged_and_the_link_usable(
    migrated_database, redis_url, seeded, client, stripe_emulator, smtp_sink
):
    user_id = signed_up(client, "steady@example.com")
    with seeded.app_context():
        customer_id = ensure_customer(user_id)
        db.session.remove()
    assert ask_change(client, "moved@example.com").status_code == 302
    link = change_link(smtp_sink, "moved@example.com", seeded)
    down = create_app(
        make_config(migrated_database, redis_url, STRIPE_API_BASE="http://127.0.0.1:9", STRIPE_MAX_NETWORK_RETRIES=0)
    )
    refused = down.test_client().get(link, follow_redirects=True).get_data(as_text=True)
    assert "Billing could not be updated just now, so your email is unchanged" in refused
    assert user_row(seeded, user_id).email == "steady@example.com"
    assert stripe_emulator.client().v1.customers.retrieve(customer_id).email == "steady@example.com"
    with down.app_context():
        db.session.remove()
        db.engine.dispose()

    client.get(link)  # Stripe is back: the same link works
    assert user_row(seeded, user_id).email == "moved@example.com"
    assert stripe_emulator.client().v1.customers.retrieve(customer_id).email == "moved@example.com"


def test_a_customer_stripe_no_longer_has_does_not_block_the_change(seeded, client, smtp_sink):
    user_id = signed_up(client, "lapsed@example.com")
    with seeded.app_context():
        db.session.get(User, user_id).stripe_customer_id = "cus_deleted_long_ago"
        db.session.commit()
        db.session.remove()
    assert ask_change(client, "current@example.com").status_code == 302
    client.get(change_link(smtp_sink, "current@example.com", seeded))
    assert user_row(seeded, user_id).email == "current@example.com"
