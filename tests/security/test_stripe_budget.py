"""A customer cannot spend the account's Stripe rate limit: the billing page (which reads the card and invoices
from Stripe) has the per-user billing limit, the Portal's return link reads Stripe again only within a per-user
budget (RATELIMIT_STRIPE_REFRESH, 4 per minute by default) and Checkout's success page has that budget too."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import REGISTRY

from app.extensions import db


def stripe_calls() -> float:
    return REGISTRY.get_sample_value("stripe_api_request_seconds_count") or 0.0


def calls_for(client, path: str) -> tuple[int, float]:
    before = stripe_calls()
    status = client.get(path).status_code
    return status, stripe_calls() - before


def test_the_portal_return_reads_stripe_only_within_the_users_budget(seeded, client, auth, stripe_emulator):
    auth.signup("customer@example.com")
    customer = stripe_emulator.client().v1.customers.create(params={"email": "customer@example.com"})
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET stripe_customer_id = :id"), {"id": customer.id})
        db.session.commit()
        db.session.remove()
    status, plain = calls_for(client, "/billing")
    assert status == 200
    status, portal = calls_for(client, "/billing?from=portal")  # one refresh of the budget spent
    assert status == 200
    sync = portal - plain
    assert sync >= 1
    before = stripe_calls()
    statuses = [client.get("/billing?from=portal").status_code for _ in range(6)]
    assert statuses == [200] * 6  # the page answers from the local copy once the refreshes are spent
    assert stripe_calls() - before <= 6 * plain + 3 * sync, (stripe_calls() - before, plain, sync)


def test_the_billing_page_is_limited_per_user(seeded, client, auth):
    auth.signup("reloader@example.com")
    statuses = [client.get("/billing").status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429], statuses


def test_the_checkout_success_page_is_limited_per_user(seeded, client, auth):
    auth.signup("reloader@example.com")
    statuses = [client.get("/billing/success?session_id=cs_test_nothing").status_code for _ in range(7)]
    assert statuses[:4] == [404] * 4 and set(statuses[4:]) == {429}, statuses
