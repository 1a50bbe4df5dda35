"""Checkout, success without a race, plan changes, cancel and resume — pages, emulator over HTTP, PostgreSQL."""

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditLog
from tests.billing.conftest import session_id_from


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))


def test_checkout_creates_one_customer_and_redirects_to_stripe(billing, stripe_emulator):
    response = billing.checkout("pro", "monthly")
    assert response.status_code == 303
    assert response.headers["Location"].startswith(stripe_emulator.url + "/c/pay/cs_")
    user = billing.user()
    assert user.stripe_customer_id.startswith("cus_")
    session = stripe_emulator.client().v1.checkout.sessions.retrieve(session_id_from(response.headers["Location"]))
    assert session.mode == "subscription" and session.customer == user.stripe_customer_id
    assert session.client_reference_id == str(user.id)
    assert session.metadata["plan"] == "pro" and session.metadata["billing_cycle"] == "monthly"
    assert session.success_url.endswith("/billing/success?session_id={CHECKOUT_SESSION_ID}")
    assert session.cancel_url.endswith("/pricing?checkout=left&plan=pro&cycle=monthly")

    # A second checkout reuses the customer and expires the first session (two tabs cannot both be paid).
    second = billing.checkout("starter", "yearly")
    assert billing.user().stripe_customer_id == user.stripe_customer_id
    customers = stripe_emulator.client().v1.customers.list(params={"email": "trader@example.com"})
    assert len(customers.data) == 1
    first = stripe_emulator.client().v1.checkout.sessions.retrieve(session.id)
    assert first.status == "expired"
    assert second.status_code == 303


def test_success_page_shows_the_plan_before_any_webhook(billing, stripe_emulator):
    page = billing.subscribe("pro", "monthly")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-testid="success-plan">Pro<' in html
    assert "$49.99" in html
    assert stripe_emulator.deliveries() == []  # nothing was delivered: the page synced from Stripe itself
    [row] = billing.subscriptions()
    assert (row.plan.name, row.billing_cycle, row.status) == ("pro", "monthly", "active")
    assert row.current_period_end is not None and row.current_period_end.tzinfo is not None
    assert audit_actions(billing.app).count("subscription.activated") == 1

    # Reloading changes nothing.
    again = billing.client.get(page.request.full_path)
    assert again.status_code == 200
    assert len(billing.subscriptions()) == 1
    assert audit_actions(billing.app).count("subscription.activated") == 1

    account = billing.client.get("/account").get_data(as_text=True)
    assert 'data-testid="current-plan">Pro<' in account


def test_billing_page_shows_plan_card_and_invoice(billing):
    billing.subscribe("starter", "yearly")
    html = billing.client.get("/billing").get_data(as_text=True)
    assert 'data-testid="billing-plan">Starter<' in html
    assert "$199.99 / year · renews on" in html
    assert "Visa •••• 4242" in html
    assert "$199.99" in html and "Paid" in html
    assert "/invoice" in html or "invoice" in html


def test_declined_card_leaves_the_user_on_free(billing, stripe_emulator):
    response = billing.checkout("pro", "monthly")
    session_id = session_id_from(response.headers["Location"])
    from stripe_emulator.testing import EmulatorError

    try:
        stripe_emulator.complete_checkout(session_id, card="4000000000000002")
    except EmulatorError as error:
        assert error.status == 402
    else:
        raise AssertionError("the declined card was accepted")
    page = billing.client.get(f"/billing/success?session_id={session_id}")
    assert "Payment not completed" in page.get_data(as_text=True)
    assert billing.subscriptions() == []
    assert 'data-testid="current-plan">Free<' in billing.client.get("/account").get_data(as_text=True)


def test_another_users_session_is_not_found(billing, stripe_emulator):
    page = billing.subscribe("pro", "monthly")
    session_path = page.request.full_path
    billing.auth.logout()
    billing.auth.signup("other@example.com")
    assert billing.client.get(session_path).status_code == 404
    assert billing.client.get("/billing/success?session_id=cs_does_not_exist").status_code == 404
    assert billing.client.get("/billing/success?session_id=../../etc").status_code == 404
    assert billing.subscriptions("other@example.com") == []


def test_bad_choices_are_refused_and_change_nothing(billing, stripe_emulator):
    for plan, cycle, message in (
        ("gold", "monthly", "There is no plan called"),
        ("free", "monthly", "The Free plan needs no payment"),
        ("pro", "weekly", "Choose monthly or yearly."),
        ("", "monthly", "Choose a plan."),
    ):
        response = billing.client.post(
            "/billing/checkout",
            data={"plan": plan, "cycle": cycle, "csrf_token": billing.token()},
            follow_redirects=True,
        )
        assert message in response.get_data(as_text=True), (plan, cycle)
    assert billing.user().stripe_customer_id is None
    assert billing.client.post("/billing/checkout", data={"plan": "pro", "cycle": "monthly"}).status_code == 400


def test_paying_user_changes_plan_on_the_same_subscription(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    response = billing.checkout("pro", "monthly")
    assert response.status_code == 303
    assert response.headers["Location"] == "/billing/change?plan=pro&cycle=monthly"
    confirm = billing.client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="change-to">Pro · monthly<' in confirm
    assert 'data-testid="amount-due">$' in confirm
    assert 'data-testid="amount-due">$0.00<' not in confirm  # an upgrade is invoiced now

    done = billing.post("/billing/change", plan="pro", cycle="monthly")
    assert done.status_code == 303
    [row] = billing.subscriptions()
    assert (row.plan.name, row.status) == ("pro", "active")
    stripe_subs = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    assert len(stripe_subs) == 1 and stripe_subs[0].items.data[0].price.id == "price_pro_monthly"
    assert "subscription.plan_changed" in audit_actions(billing.app)

    # Already on that plan: 409 through the API-shaped error, nothing changes.
    again = billing.checkout("pro", "monthly")
    assert again.status_code == 303
    assert "already on Pro monthly" in billing.client.get("/pricing").get_data(as_text=True)


def test_cancel_at_period_end_and_resume(billing):
    billing.subscribe("pro", "monthly")
    response = billing.post("/billing/cancel")
    assert response.status_code == 303
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end and row.status == "active"
    html = billing.client.get("/billing").get_data(as_text=True)
    assert f"Pro until {row.current_period_end.strftime('%-d %b %Y')}" in html
    assert "Resume Pro" in html
    # Access continues until the period ends.
    assert 'data-testid="current-plan">Pro<' in billing.client.get("/account").get_data(as_text=True)

    billing.post("/billing/resume")
    [row] = billing.subscriptions()
    assert not row.cancel_at_period_end
    actions = audit_actions(billing.app)
    assert actions.count("subscription.cancel_scheduled") == 1 and actions.count("subscription.resumed") == 1


def test_portal_redirect_and_no_customer_error(billing, stripe_emulator):
    response = billing.post("/billing/portal")
    assert response.status_code == 303 and response.headers["Location"] == "/billing"
    assert "You have no billing account yet" in billing.client.get("/billing").get_data(as_text=True)
    billing.subscribe("pro", "monthly")
    response = billing.post("/billing/portal")
    assert response.status_code == 303
    assert response.headers["Location"].startswith(stripe_emulator.url)


def test_a_payment_not_yet_synced_still_blocks_a_second_checkout(billing, stripe_emulator):
    """Paid in Stripe, success page never loaded, webhook not arrived: a new checkout is refused anyway."""
    response = billing.checkout("pro", "monthly")
    stripe_emulator.complete_checkout(session_id_from(response.headers["Location"]))
    assert billing.subscriptions() == []  # our copy does not know yet
    again = billing.checkout("starter", "monthly")
    assert again.status_code == 303
    assert again.headers["Location"] == "/billing/change?plan=starter&cycle=monthly"
    assert len(billing.stripe_subscriptions(billing.user().stripe_customer_id)) == 1
    [row] = billing.subscriptions()
    assert (row.plan.name, row.status) == ("pro", "active")
