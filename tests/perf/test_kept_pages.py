"""Whole logged-in pages kept under the values they are rendered from (`templating.KeptPages`): a page viewed again
with nothing changed renders no template, and whatever changes in between (the rows of the log-in check, what
Stripe's summary says, the session's CSRF token, a flash message) shows at once; no user ever gets another's page."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request

import pytest
import sqlalchemy as sa
from jinja2 import Template

from app.extensions import db
from app.models import User, UserSubscription
from app.services.billing_summary import forget_plan_outlook
from tests.conftest import Auth, csrf_token_from
from tests.perf.test_logged_in_pages import CEILINGS, calls_of, pro_client  # noqa: F401  (the fixture)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post(url: str, data: dict) -> int:
    """POST a form to the emulator's pages, its redirect not followed: the status."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    request = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), method="POST")
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_page_viewed_again_unchanged_renders_nothing(pro_client, path):  # noqa: F811
    """(Before: both templates, the page's and base.html, on every view.)"""
    first = pro_client.get(path)
    again: list = []
    assert calls_of(Template.render, lambda: again.append(pro_client.get(path))) == 0
    assert again[0].status_code == 200 and again[0].get_data() == first.get_data()


def test_a_change_of_the_rows_shows_on_the_next_view(app, pro_client):  # noqa: F811
    """A change committed anywhere (a webhook in another process, the Portal's return) reaches the log-in check's
    rows: the page is rendered afresh."""
    assert "then Free" not in pro_client.get("/account").get_data(as_text=True)
    with app.app_context():
        db.session.execute(sa.update(UserSubscription).values(cancel_at_period_end=True))
        db.session.execute(sa.update(User).values(billing_email="accounts@example.com"))
        db.session.commit()
    page = pro_client.get("/account").get_data(as_text=True)
    assert "then Free" in page and "accounts@example.com" in page


def test_a_change_of_stripes_summary_shows_on_the_next_view(app, pro_client, stripe_emulator):  # noqa: F811
    """What only Stripe knows (the card, the invoices) is part of the billing page's key: a summary read afresh
    from Stripe after a change there (the cache entry dropped, as each billing commit drops it) shows at once."""
    with app.app_context():
        user = db.session.scalar(sa.select(User))
        user_id, customer_id = user.id, user.stripe_customer_id
    before = pro_client.get("/billing").get_data(as_text=True)
    last4 = re.search(r"•••• (\d{4})", before)
    assert last4 is not None and last4.group(1) == "4242"
    # Another card made the default in the emulator's Portal, as a customer does there.
    portal = stripe_emulator.client().v1.billing_portal.sessions.create(
        {"customer": customer_id, "return_url": "http://127.0.0.1:9/billing"}
    )
    status = post(
        portal.url + "/payment_method", {"card_number": "5555555555554444", "card_expiry": "01 / 31", "card_cvc": "123"}
    )
    assert status == 303
    with app.app_context():
        forget_plan_outlook(user_id)
    after = pro_client.get("/billing").get_data(as_text=True)
    assert "•••• 4444" in after


def test_each_session_of_a_user_gets_its_own_forms_token(app, pro_client):  # noqa: F811
    """The page is kept per browser session (its CSRF token is part of the key): a second browser of the same
    user gets its own token, and its forms work."""
    first = csrf_token_from(pro_client.get("/account").get_data(as_text=True))
    other = app.test_client()
    assert Auth(other).login().status_code == 302
    page = other.get("/account").get_data(as_text=True)
    second = csrf_token_from(page)
    assert second != first
    assert other.post("/logout", data={"csrf_token": second}).status_code == 302
    assert other.get("/account").status_code == 302  # logged out: sent to the log-in page
    assert pro_client.get("/account").status_code == 200


def test_a_flash_message_shows_once_and_the_page_is_kept_again_after(app, pro_client):  # noqa: F811
    pro_client.get("/account")
    with pro_client.session_transaction() as session:
        session.setdefault("_flashes", []).append(("info", "Something to tell you once."))
    assert "Something to tell you once." in pro_client.get("/account").get_data(as_text=True)
    assert "Something to tell you once." not in pro_client.get("/account").get_data(as_text=True)
    assert calls_of(Template.render, lambda: pro_client.get("/account")) == 0


def test_users_on_the_same_plan_never_get_each_others_page(app, seeded):
    pages = {}
    for email in ("first@example.com", "second@example.com"):
        client = app.test_client()
        Auth(client).signup(email=email)
        for _ in range(2):
            pages[email] = client.get("/account").get_data(as_text=True)
    assert "first@example.com" in pages["first@example.com"] and "second@example.com" not in pages["first@example.com"]
    assert (
        "second@example.com" in pages["second@example.com"] and "first@example.com" not in pages["second@example.com"]
    )


def test_every_field_of_stripes_summary_is_part_of_the_key(app, pro_client, stripe_emulator):  # noqa: F811
    """A field the summary gained later (the credit balance) counts as the older ones do."""
    with app.app_context():
        user = db.session.scalar(sa.select(User))
        user_id, customer_id = user.id, user.stripe_customer_id
    assert "Credit balance" not in pro_client.get("/billing").get_data(as_text=True)
    stripe_emulator.client().v1.customers.update(customer_id, {"balance": -1234})
    with app.app_context():
        forget_plan_outlook(user_id)
    assert "$12.34" in pro_client.get("/billing").get_data(as_text=True)


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_kept_page_is_kept_as_the_bytes_it_is_sent_as(app, pro_client, path):  # noqa: F811
    """Encoding a whole page to UTF-8 again for every view cost more than the rest of the view: a page is kept
    encoded, and each view sends those very bytes."""
    first = pro_client.get(path)
    again = pro_client.get(path)
    kept = list(app.extensions["kept_pages"].kept.values())
    assert kept and all(type(page) is bytes for page in kept)
    assert again.get_data() == first.get_data() and again.get_data() in kept
