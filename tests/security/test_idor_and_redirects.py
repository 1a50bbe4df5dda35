"""IDOR on invoices, the Customer Portal and the API's strategies; open redirects through the Stripe return URLs.

Two real customers pay through the emulator; the pages a browser would then see (our billing page, the hosted
Portal) show only the viewer's own data. The URLs Stripe sends people back to (portal `return_url`, checkout
`success_url`/`cancel_url`) are built by the server: no field, query parameter or JSON key can change them.
(Strategies' pages and the success page: tests/entitlements/test_gates.py and test_web_attacks.py; the billing
API with another user's token: tests/api/test_billing_api.py.)
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa

from app.extensions import db
from app.models import User
from tests.conftest import csrf_token_from

PREFIX = "/api/v1"
EVIL = "https://evil.example/phish"
RETURN_URL = "http://localhost/billing?from=portal"
SUCCESS_URL = "http://localhost/billing/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "http://localhost/pricing"
#: Every name a request might use to smuggle a redirect target in.
SMUGGLED = {
    "return_url": EVIL,
    "next": EVIL,
    "success_url": EVIL,
    "cancel_url": EVIL,
    "redirect": EVIL,
    "customer": "cus_someone_else",
    "url": EVIL,
}


def csrf(client, path="/pricing") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def pay_on_the_web(client, auth, emulator, email: str, plan: str = "pro") -> str:
    """Sign up, pay through Checkout in the emulator, come back to the success page; the Stripe customer id."""
    auth.signup(email)
    response = client.post("/billing/checkout", data={"plan": plan, "cycle": "monthly", "csrf_token": csrf(client)})
    assert response.status_code == 303, response.get_data(as_text=True)
    session_id = urlsplit(response.headers["Location"]).path.rsplit("/", 1)[-1]
    emulator.complete_checkout(session_id)
    assert client.get(f"/billing/success?session_id={session_id}").status_code == 200
    return customer_of(client.application, email)


def customer_of(app, email: str) -> str:
    with app.app_context():
        return db.session.scalar(sa.select(User.stripe_customer_id).where(User.email == email))


def invoices_of(emulator, customer: str) -> list:
    return list(emulator.client().v1.invoices.list(params={"customer": customer}).auto_paging_iter())


def portal_page(url: str) -> tuple[str, str]:
    """The hosted Portal as a browser sees it: its text and where its return link leads."""
    html = requests.get(url, timeout=10).text
    match = re.search(r'id="return-link" href="([^"]+)"', html)
    assert match, "the portal page has no return link"
    return html, match.group(1).replace("&amp;", "&")


def bearer(client, email: str) -> dict:
    tokens = client.post(PREFIX + "/auth/token", json={"email": email, "password": "correct horse"}).get_json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def two_customers(seeded, client, auth, stripe_emulator):
    """owner@ on Pro and intruder@ on Starter, both real Stripe customers; the client is logged in as intruder@."""
    owner = pay_on_the_web(client, auth, stripe_emulator, "owner@example.com", "pro")
    auth.logout()
    intruder = pay_on_the_web(client, auth, stripe_emulator, "intruder@example.com", "starter")
    assert owner != intruder
    return owner, intruder


# --- IDOR ----------------------------------------------------------------------------------------------------


def test_the_billing_page_lists_only_the_users_own_invoices(two_customers, client, stripe_emulator):
    owner, intruder = two_customers
    [owners_invoice] = invoices_of(stripe_emulator, owner)
    [own_invoice] = invoices_of(stripe_emulator, intruder)
    html = client.get("/billing", query_string={"customer": owner}).get_data(as_text=True)
    assert own_invoice.hosted_invoice_url in html and own_invoice.number in html
    assert owners_invoice.id not in html and owners_invoice.number not in html
    assert owners_invoice.hosted_invoice_url not in html and owners_invoice.invoice_pdf not in html


def test_the_portal_opens_only_for_the_users_own_customer(two_customers, client, stripe_emulator):
    owner, _ = two_customers
    response = client.post(
        "/billing/portal", data={**SMUGGLED, "customer": owner, "csrf_token": csrf(client, "/billing")}
    )
    assert response.status_code == 303
    html, _ = portal_page(response.headers["Location"])
    assert "intruder@example.com" in html and "owner@example.com" not in html

    api = client.application.test_client()  # no session cookie: the token alone says who is asking
    response = api.post(
        PREFIX + "/billing/portal", headers=bearer(api, "intruder@example.com"), json={**SMUGGLED, "customer": owner}
    )
    assert response.status_code == 200
    html, _ = portal_page(response.get_json()["portal_url"])
    assert "intruder@example.com" in html and "owner@example.com" not in html


def test_the_api_lists_only_the_users_own_strategies(seeded, client, auth, stripe_emulator):
    pay_on_the_web(client, auth, stripe_emulator, "owner@example.com", "pro")
    auth.logout()
    pay_on_the_web(client, auth, stripe_emulator, "intruder@example.com", "pro")
    api = seeded.test_client()
    owner, intruder = bearer(api, "owner@example.com"), bearer(api, "intruder@example.com")
    created = api.post(PREFIX + "/strategies", headers=owner, json={"name": "Owner's edge", "rules": "fast=7 slow=21"})
    assert created.status_code == 201
    assert api.get(PREFIX + "/strategies", headers=intruder).get_json() == {"strategies": []}
    assert [s["id"] for s in api.get(PREFIX + "/strategies", headers=owner).get_json()["strategies"]] == [
        created.get_json()["id"]
    ]


# --- open redirects through Stripe's return URLs -------------------------------------------------------------


def test_no_request_field_changes_the_portal_return_url(two_customers, client):
    response = client.post(
        "/billing/portal?" + "&".join(f"{k}={v}" for k, v in SMUGGLED.items()),
        data={**SMUGGLED, "csrf_token": csrf(client, "/billing")},
    )
    assert response.status_code == 303
    assert portal_page(response.headers["Location"])[1] == RETURN_URL

    api = client.application.test_client()
    response = api.post(
        PREFIX + "/billing/portal", query_string=SMUGGLED, headers=bearer(api, "intruder@example.com"), json=SMUGGLED
    )
    assert response.status_code == 200
    assert portal_page(response.get_json()["portal_url"])[1] == RETURN_URL


def test_no_request_field_changes_the_checkout_success_and_cancel_urls(seeded, client, auth, stripe_emulator):
    auth.signup("redirected@example.com")
    response = client.post(
        "/billing/checkout",
        query_string=SMUGGLED,
        data={**SMUGGLED, "plan": "pro", "cycle": "monthly", "csrf_token": csrf(client)},
    )
    assert response.status_code == 303
    web_session = urlsplit(response.headers["Location"]).path.rsplit("/", 1)[-1]

    api = seeded.test_client()
    response = api.post(
        PREFIX + "/billing/checkout",
        query_string=SMUGGLED,
        headers=bearer(api, "redirected@example.com"),
        json={**SMUGGLED, "plan_name": "starter", "billing_cycle": "yearly"},
    )
    assert response.status_code == 200
    api_session = response.get_json()["session_id"]

    # Leaving the web Checkout returns to pricing with the choice kept (a plan and cycle of the catalog, nothing
    # else); the API's sessions go back to plain pricing.
    expected = {web_session: f"{CANCEL_URL}?checkout=left&plan=pro&cycle=monthly", api_session: CANCEL_URL}
    for session_id, cancel_url in expected.items():
        session = stripe_emulator.client().v1.checkout.sessions.retrieve(session_id)
        assert (session.success_url, session.cancel_url) == (SUCCESS_URL, cancel_url)


def test_production_builds_stripe_redirects_on_app_base_url_not_the_host_header(
    migrated_database, redis_url, stripe_emulator
):
    """A client-chosen Host header cannot make Stripe send a customer to another site."""
    from app import create_app
    from app.urls import external_url
    from tests.test_config import production_env

    app = create_app(
        production_env(
            DATABASE_URL=migrated_database,
            REDIS_URL=redis_url,
            STRIPE_SECRET_KEY="sk_test_" + "x" * 24,
            STRIPE_API_BASE=stripe_emulator.url,
        )
    )
    with app.test_request_context("/billing/portal", base_url="https://evil.example"):
        assert (
            external_url("billing.show_billing", **{"from": "portal"})
            == "https://billing.example.com/billing?from=portal"
        )
        assert external_url("billing.show_success") == "https://billing.example.com/billing/success"
    with app.app_context():
        assert external_url("billing.show_billing") == "https://billing.example.com/billing"  # the CLI's mails
