"""A visitor who chose a paid plan, signed up and must confirm the email before Checkout: the review page says so
(Checkout's button waits), and the mailed link, once followed, leads back to that plan's review instead of the
account page, where the choice was lost."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from tests.conftest import Auth, csrf_token_from
from tests.eventually import eventually
from tests.security.test_account_abuse import mailed_link

REVIEW = "/billing/checkout?plan=pro&cycle=yearly"


def sign_up_for_pro_yearly(client, email: str):
    """Sign up with the choice, then log in where sign-up sends the visitor (the log-in page, on to the review)."""
    token = csrf_token_from(client.get("/signup?plan=pro&cycle=yearly").get_data(as_text=True))
    response = client.post(
        "/signup?plan=pro&cycle=yearly",
        data={"email": email, "password": "correct horse", "confirm": "correct horse", "csrf_token": token},
    )
    response.close()  # the verification mail leaves once the response is closed
    login = response.headers["Location"]
    assert urlsplit(login).path == "/login" and parse_qs(urlsplit(login).query)["next"] == [REVIEW]
    page = client.get(login).get_data(as_text=True)
    assert (
        f"Check your email: we sent a message to {email}. Open the link in it, then log in to continue to Pro." in page
    )
    return client.post(
        login, data={"email": email, "password": "correct horse", "next": REVIEW, "csrf_token": csrf_token_from(page)}
    )


def test_the_review_waits_for_the_email_and_the_link_leads_back_to_it(confirming_app, smtp_sink):
    client = confirming_app.test_client()
    signed_up = sign_up_for_pro_yearly(client, "chooser@example.com")
    assert urlsplit(signed_up.headers["Location"]).path + "?" + urlsplit(signed_up.headers["Location"]).query == REVIEW
    review = client.get(REVIEW).get_data(as_text=True)
    assert 'data-testid="confirm-email-first"' in review and "chooser@example.com" in review
    assert "Checkout opens once you have followed the link we sent to" in review
    assert "disabled" in review.split("Continue to secure checkout")[0].rsplit("<button", 1)[1]

    link = mailed_link(smtp_sink, "chooser@example.com", "verify-email")
    assert "plan=pro" in link and "cycle=yearly" in link
    followed = client.get(link)
    assert followed.status_code == 302 and followed.headers["Location"].endswith(REVIEW)
    confirmed = client.get(REVIEW).get_data(as_text=True)
    assert "your email is confirmed" in confirmed
    assert 'data-testid="confirm-email-first"' not in confirmed
    token = csrf_token_from(confirmed)
    paying = client.post("/billing/checkout", data={"plan": "pro", "cycle": "yearly", "csrf_token": token})
    assert paying.status_code == 303 and "/pay/cs_" in paying.headers["Location"]


def test_a_link_opened_in_another_browser_logs_in_then_reviews_the_plan(confirming_app, smtp_sink):
    sign_up_for_pro_yearly(confirming_app.test_client(), "elsewhere@example.com")
    link = mailed_link(smtp_sink, "elsewhere@example.com", "verify-email")
    other = confirming_app.test_client()
    followed = other.get(link)
    assert followed.status_code == 302
    login = followed.headers["Location"]
    assert urlsplit(login).path == "/login" and parse_qs(urlsplit(login).query)["next"] == [REVIEW]
    page = other.get(login).get_data(as_text=True)
    assert "Thank you: your email is confirmed. Log in to continue to Pro." in page  # says what to do next
    logged_in = other.post(
        login,
        data={
            "email": "elsewhere@example.com",
            "password": "correct horse",
            "next": REVIEW,
            "csrf_token": csrf_token_from(page),
        },
    )
    assert logged_in.headers["Location"].endswith(REVIEW)
    assert 'data-testid="confirm-email-first"' not in other.get(REVIEW).get_data(as_text=True)


def test_mailing_the_link_again_from_the_review_keeps_the_plan(confirming_app, smtp_sink):
    client = confirming_app.test_client()
    sign_up_for_pro_yearly(client, "again@example.com")
    first = mailed_link(smtp_sink, "again@example.com", "verify-email")
    token = csrf_token_from(client.get(REVIEW).get_data(as_text=True))
    again = client.post("/account/verify-email", data={"plan": "pro", "cycle": "yearly", "csrf_token": token})
    again.close()
    assert again.status_code == 302 and again.headers["Location"].endswith(REVIEW)
    assert "We sent a new link to again@example.com" in client.get(REVIEW).get_data(as_text=True)
    assert eventually(lambda: len([m for m in smtp_sink.messages if "again@example.com" in m["to"]]) == 2)
    assert "plan=pro" in first
    second = mailed_link(smtp_sink, "again@example.com", "verify-email")
    assert "plan=pro" in second and "cycle=yearly" in second


def test_a_member_who_chose_on_pricing_before_confirming_is_taken_back_to_that_plan(confirming_app, smtp_sink):
    """Signed up without a plan, logged in, not yet confirmed: choosing Pro yearly on /pricing leads to its review
    (which asks for the confirmation), and the link mailed at sign-up, which names no plan, leads back there."""
    client = confirming_app.test_client()
    Auth(client).signup("later@example.com")  # no plan chosen: the link names none
    pricing = client.get("/pricing").get_data(as_text=True)
    chose = client.post(
        "/billing/checkout", data={"plan": "pro", "cycle": "yearly", "csrf_token": csrf_token_from(pricing)}
    )
    assert chose.status_code == 303 and chose.headers["Location"] == REVIEW
    review = client.get(REVIEW).get_data(as_text=True)
    assert 'data-testid="confirm-email-first"' in review

    link = mailed_link(smtp_sink, "later@example.com", "verify-email")
    assert "plan=" not in link
    followed = client.get(link)
    assert followed.status_code == 302 and followed.headers["Location"] == REVIEW
    confirmed = client.get(REVIEW).get_data(as_text=True)
    assert "your email is confirmed" in confirmed and 'data-testid="confirm-email-first"' not in confirmed
    paying = client.post(
        "/billing/checkout", data={"plan": "pro", "cycle": "yearly", "csrf_token": csrf_token_from(confirmed)}
    )
    assert paying.status_code == 303 and "/pay/cs_" in paying.headers["Location"]


def test_the_log_in_page_after_sign_up_is_filled_in_and_says_what_comes_next(confirming_app, smtp_sink):
    """Sign-up leads to the log-in form: filled in with the address just typed, "Now log in" (not "Welcome back"),
    and the same page for an address that has an account; logging in on to the account page says the confirmation
    is still pending."""
    client = confirming_app.test_client()
    token = csrf_token_from(client.get("/signup").get_data(as_text=True))
    data = {"email": "newcomer@example.com", "password": "correct horse", "confirm": "correct horse"}
    signed_up = client.post("/signup", data={**data, "csrf_token": token})
    signed_up.close()
    page = client.get(signed_up.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="login-heading">Now log in<' in page and "Welcome back" not in page
    assert 'value="newcomer@example.com"' in page
    assert 'data-testid="login-heading">Welcome back<' in client.get("/login").get_data(as_text=True)  # once only

    logged_in = client.post(
        "/login", data={"email": "newcomer@example.com", "password": "correct horse", "csrf_token": token}
    )
    assert logged_in.headers["Location"] == "/account"
    account = client.get("/account").get_data(as_text=True)
    assert "One more step: open the link we sent to newcomer@example.com to confirm your email." in account

    again = confirming_app.test_client()  # the address has an account now: the same page all the same
    token = csrf_token_from(again.get("/signup").get_data(as_text=True))
    answer = again.post("/signup", data={**data, "csrf_token": token})
    answer.close()
    assert without_csrf_token(again.get(answer.headers["Location"]).get_data(as_text=True)) == without_csrf_token(page)


def without_csrf_token(page: str) -> str:
    return re.sub(r'name="csrf_token" type="hidden" value="[^"]*"', "", page)
