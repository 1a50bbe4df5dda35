"""The billing API as the guide's section 4.2 calls it, with tokens from /auth/token, the emulator over HTTP and
its webhooks delivered to the live app; bad input, other users, rate limits and Stripe being down.

Every answer also validates against the OpenAPI document (the `api` fixture)."""

from __future__ import annotations

import socket
from datetime import datetime

import pytest
import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import AuditLog, User, UserSubscription
from tests.conftest import Auth, csrf_token_from, make_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_row(app, email: str) -> User:
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        db.session.expunge_all()
        return user


def subscription_rows(app, email: str) -> list[tuple]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(
                UserSubscription.stripe_subscription_id,
                UserSubscription.status,
                UserSubscription.stripe_price_id,
                UserSubscription.cancel_at_period_end,
            )
            .join(User, User.id == UserSubscription.user_id)
            .where(User.email == email)
            .order_by(UserSubscription.id)
        ).all()
        return [tuple(r) for r in rows]


def audit_count(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))


def stripe_subscriptions(emulator, customer_id: str) -> list:
    return list(
        emulator.client().v1.subscriptions.list(params={"customer": customer_id, "status": "all"}).auto_paging_iter()
    )


def pay(api, emulator, token: str, plan: str = "pro", cycle: str = "monthly") -> dict:
    """4.2: checkout → the emulator's complete endpoint (the browser step) → webhooks delivered to the app."""
    response = api.post("/billing/checkout", token, json={"plan_name": plan, "billing_cycle": cycle})
    assert response.status_code == 200, response.get_json()
    emulator.complete_checkout(response.get_json()["session_id"])
    emulator.flush()
    return response.get_json()


def test_guide_section_4_2(api, stripe_emulator, webhooks_to_app):
    token = api.user("trader@example.com")
    free = api.get("/billing/subscription", token).get_json()
    assert (free["plan"], free["status"], free["cancel_at_period_end"]) == ("free", None, False)
    assert "api_access" not in free["features"]

    checkout = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert checkout.status_code == 200
    body = checkout.get_json()
    assert body["checkout_url"] == f"{stripe_emulator.url}/c/pay/{body['session_id']}"
    stripe_emulator.call("POST", f"/_emulator/checkout/{body['session_id']}/complete", {"card": "4242424242424242"})
    stripe_emulator.flush()  # the webhooks reach the app: an API client has no success page to sync for it
    assert {d["type"] for d in stripe_emulator.deliveries(ok=True)} >= {"checkout.session.completed"}

    sub = api.get("/billing/subscription", token).get_json()
    assert (sub["plan"], sub["billing_cycle"], sub["status"], sub["cancel_at_period_end"]) == (
        "pro",
        "monthly",
        "active",
        False,
    )
    assert sub["features"]["api_access"] is True
    period_end = datetime.fromisoformat(sub["current_period_end"])
    assert period_end.tzinfo is not None

    portal = api.post("/billing/portal", token).get_json()
    assert portal["portal_url"].startswith(stripe_emulator.url)

    canceled = api.post("/billing/cancel", token).get_json()
    assert canceled["cancel_at_period_end"] is True and canceled["status"] == "active"
    assert canceled["features"]["api_access"] is True  # access continues until the period ends
    assert api.post("/billing/cancel", token).status_code == 200  # asking twice gives the same answer
    resumed = api.post("/billing/resume", token).get_json()
    assert resumed["cancel_at_period_end"] is False

    preview = api.post(
        "/billing/change-plan", token, json={"plan_name": "starter", "billing_cycle": "monthly", "preview": True}
    ).get_json()
    assert (preview["kind"], preview["applied"], preview["amount_due_now"]) == ("downgrade", False, 0)
    assert datetime.fromisoformat(preview["effective_at"]) == period_end
    stripe_emulator.flush()
    customer = user_row(api.app, "trader@example.com").stripe_customer_id
    [stripe_sub] = stripe_subscriptions(stripe_emulator, customer)
    assert stripe_sub.cancel_at_period_end is False
    assert [r[0] for r in subscription_rows(api.app, "trader@example.com")] == [stripe_sub.id]


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"plan_name": "gold", "billing_cycle": "monthly"}, 400, "unknown_plan"),
        ({"plan_name": "free", "billing_cycle": "monthly"}, 400, "free_plan_not_purchasable"),
        ({"plan_name": "free", "billing_cycle": "yearly"}, 400, "free_plan_not_purchasable"),
        ({"plan_name": "pro", "billing_cycle": "weekly"}, 400, "invalid_billing_cycle"),
        ({"plan_name": "pro"}, 400, "missing_field"),
        ({"billing_cycle": "monthly"}, 400, "missing_field"),
        ({"plan_name": "  ", "billing_cycle": "monthly"}, 400, "missing_field"),
        ({"plan_name": ["pro"], "billing_cycle": "monthly"}, 400, "invalid_field"),
        ({"plan_name": "p" * 200, "billing_cycle": "monthly"}, 400, "invalid_field"),
        ([], 400, "invalid_json"),
        ("not json", 400, "invalid_json"),
    ],
)
def test_bad_checkout_input_is_a_4xx_and_changes_nothing(api, stripe_emulator, payload, status, code):
    token = api.user("trader@example.com")
    kwargs = {"data": payload, "content_type": "application/json"} if isinstance(payload, str) else {"json": payload}
    response = api.post("/billing/checkout", token, **kwargs)
    assert response.status_code == status
    assert response.get_json()["error"] == code and response.get_json()["message"]
    assert user_row(api.app, "trader@example.com").stripe_customer_id is None
    assert stripe_emulator.client().v1.customers.list().data == []
    assert audit_count(api.app) == 0


def test_bad_plan_change_input_is_a_4xx(api, stripe_emulator, webhooks_to_app):
    token = api.user("trader@example.com")
    # Not paying yet: nothing to change.
    response = api.post("/billing/change-plan", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert (response.status_code, response.get_json()["error"]) == (400, "no_subscription")
    pay(api, stripe_emulator, token, "starter", "monthly")
    before = subscription_rows(api.app, "trader@example.com")
    for payload, status, code in (
        ({"plan_name": "gold", "billing_cycle": "monthly"}, 400, "unknown_plan"),
        ({"plan_name": "free", "billing_cycle": "monthly"}, 400, "free_plan_not_purchasable"),
        ({"plan_name": "pro", "billing_cycle": "weekly"}, 400, "invalid_billing_cycle"),
        ({"plan_name": "pro"}, 400, "missing_field"),
        ({"plan_name": "starter", "billing_cycle": "monthly"}, 409, "already_on_plan"),
    ):
        response = api.post("/billing/change-plan", token, json=payload)
        assert (response.status_code, response.get_json()["error"]) == (status, code), payload
    assert api.post("/billing/change-plan", token, data="{", content_type="application/json").status_code == 400
    assert subscription_rows(api.app, "trader@example.com") == before


def test_already_on_plan_is_409_and_another_paid_plan_needs_a_plan_change(api, stripe_emulator, webhooks_to_app):
    token = api.user("trader@example.com")
    pay(api, stripe_emulator, token, "pro", "monthly")
    again = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert (again.status_code, again.get_json()["error"]) == (409, "already_on_plan")
    other = api.post("/billing/checkout", token, json={"plan_name": "starter", "billing_cycle": "yearly"})
    assert (other.status_code, other.get_json()["error"]) == (409, "plan_change_required")
    customer = user_row(api.app, "trader@example.com").stripe_customer_id
    assert len(stripe_subscriptions(stripe_emulator, customer)) == 1
    open_sessions = stripe_emulator.client().v1.checkout.sessions.list(params={"customer": customer, "status": "open"})
    assert open_sessions.data == []  # no second Checkout was even offered


def test_portal_cancel_and_resume_without_a_subscription(api):
    token = api.user("trader@example.com")
    portal = api.post("/billing/portal", token)
    assert (portal.status_code, portal.get_json()["error"]) == (400, "no_billing_account")
    assert "no billing account" in portal.get_json()["message"]
    for path in ("/billing/cancel", "/billing/resume"):
        response = api.post(path, token)
        assert (response.status_code, response.get_json()["error"]) == (400, "no_subscription"), path
    assert audit_count(api.app) == 0


def test_resume_when_not_canceling_is_409(api, stripe_emulator, webhooks_to_app):
    token = api.user("trader@example.com")
    pay(api, stripe_emulator, token)
    response = api.post("/billing/resume", token)
    assert (response.status_code, response.get_json()["error"]) == (409, "not_canceling")
    assert subscription_rows(api.app, "trader@example.com")[0][3] is False


def test_plan_change_preview_and_apply_keep_one_subscription(api, stripe_emulator, webhooks_to_app):
    token = api.user("trader@example.com")
    pay(api, stripe_emulator, token, "starter", "monthly")
    customer = user_row(api.app, "trader@example.com").stripe_customer_id
    [original] = stripe_subscriptions(stripe_emulator, customer)

    preview = api.post(
        "/billing/change-plan", token, json={"plan_name": "pro", "billing_cycle": "monthly", "preview": True}
    ).get_json()
    assert (preview["kind"], preview["applied"], preview["effective_at"]) == ("upgrade", False, None)
    assert 0 < preview["amount_due_now"] <= 3000
    [unchanged] = stripe_subscriptions(stripe_emulator, customer)
    assert unchanged["items"].data[0].price.id == "price_starter_monthly"  # a preview changes nothing

    applied = api.post("/billing/change-plan", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert applied.status_code == 200
    assert (applied.get_json()["kind"], applied.get_json()["applied"]) == ("upgrade", True)
    stripe_emulator.flush()
    [upgraded] = stripe_subscriptions(stripe_emulator, customer)
    assert upgraded.id == original.id and upgraded["items"].data[0].price.id == "price_pro_monthly"
    assert subscription_rows(api.app, "trader@example.com") == [(original.id, "active", "price_pro_monthly", False)]
    assert api.get("/billing/subscription", token).get_json()["plan"] == "pro"

    # A downgrade is scheduled for the period end on the same subscription.
    down = api.post("/billing/change-plan", token, json={"plan_name": "starter", "billing_cycle": "monthly"})
    assert (down.get_json()["kind"], down.get_json()["amount_due_now"]) == ("downgrade", 0)
    stripe_emulator.flush()
    assert [s.id for s in stripe_subscriptions(stripe_emulator, customer)] == [original.id]
    assert [r[0] for r in subscription_rows(api.app, "trader@example.com")] == [original.id]
    assert api.get("/billing/subscription", token).get_json()["plan"] == "pro"  # until the period ends


def test_the_kind_of_a_plan_change_is_its_direction_and_effective_at_its_time(api, stripe_emulator, webhooks_to_app):
    """`kind` says what the change is (by the plans' tiers, the sync's rule for the plan-change counter), not when:
    the other cycle of the same plan is a cycle_change (it used to say "downgrade", as every change waiting for the
    period end did), a higher tier on a shorter cycle an upgrade at period end."""
    token = api.user("yearly@example.com")
    pay(api, stripe_emulator, token, "starter", "yearly")
    period_end = api.get("/billing/subscription", token).get_json()["current_period_end"]

    def preview(plan: str, cycle: str) -> tuple:
        answer = api.post(
            "/billing/change-plan", token, json={"plan_name": plan, "billing_cycle": cycle, "preview": True}
        ).get_json()
        return answer["kind"], answer["effective_at"], answer["amount_due_now"] > 0

    assert preview("starter", "monthly") == ("cycle_change", period_end, False)
    assert preview("pro", "monthly") == ("upgrade", period_end, False)  # shorter: it waits for the year's end
    assert preview("pro", "yearly") == ("upgrade", None, True)  # now, prorated

    changed = api.post("/billing/change-plan", token, json={"plan_name": "starter", "billing_cycle": "monthly"})
    assert changed.status_code == 200, changed.get_json()
    assert (changed.get_json()["kind"], changed.get_json()["applied"]) == ("cycle_change", True)
    assert changed.get_json()["effective_at"] == period_end
    assert changed.get_json()["amount_due_now"] == 0

    other = api.user("monthly@example.com")
    pay(api, stripe_emulator, other, "pro", "monthly")
    answer = api.post(
        "/billing/change-plan", other, json={"plan_name": "pro", "billing_cycle": "yearly", "preview": True}
    ).get_json()
    assert (answer["kind"], answer["amount_due_now"]) == ("cycle_change", 0)  # cheaper per year: at period end
    answer = api.post(
        "/billing/change-plan", other, json={"plan_name": "starter", "billing_cycle": "yearly", "preview": True}
    ).get_json()
    assert (answer["kind"], answer["amount_due_now"]) == ("downgrade", 0)


def test_the_eleventh_checkout_in_a_minute_is_429(api, stripe_emulator):
    token = api.user("trader@example.com")
    first = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert first.status_code == 200
    for _ in range(9):
        assert (
            api.post("/billing/checkout", token, json={"plan_name": "gold", "billing_cycle": "monthly"}).status_code
            == 400
        )
    limited = api.post("/billing/checkout", token, json={"plan_name": "pro", "billing_cycle": "monthly"})
    assert limited.status_code == 429
    assert limited.get_json()["error"] == "too_many_requests" and limited.get_json()["message"]
    assert int(limited.headers["Retry-After"]) > 0
    customer = user_row(api.app, "trader@example.com").stripe_customer_id
    sessions = stripe_emulator.client().v1.checkout.sessions.list(params={"customer": customer}).data
    assert len(sessions) == 1  # the refused request reached nothing

    # The limit is per user, not per address: another user on the same address is not limited.
    other = api.user("other@example.com")
    assert (
        api.post("/billing/checkout", other, json={"plan_name": "pro", "billing_cycle": "monthly"}).status_code == 200
    )


def test_another_users_token_cannot_see_or_change_this_subscription(api, stripe_emulator, webhooks_to_app):
    owner = api.user("owner@example.com")
    pay(api, stripe_emulator, owner)
    intruder = api.user("intruder@example.com")
    assert api.get("/billing/subscription", intruder).get_json()["plan"] == "free"
    for path in ("/billing/cancel", "/billing/resume"):
        assert api.post(path, intruder).get_json()["error"] == "no_subscription"
    assert api.post("/billing/portal", intruder).get_json()["error"] == "no_billing_account"
    assert (
        api.post(
            "/billing/change-plan", intruder, json={"plan_name": "starter", "billing_cycle": "monthly"}
        ).get_json()["error"]
        == "no_subscription"
    )
    stripe_emulator.flush()
    customer = user_row(api.app, "owner@example.com").stripe_customer_id
    [sub] = stripe_subscriptions(stripe_emulator, customer)
    assert sub.cancel_at_period_end is False and sub["items"].data[0].price.id == "price_pro_monthly"
    assert api.get("/billing/subscription", owner).get_json()["cancel_at_period_end"] is False
    assert user_row(api.app, "intruder@example.com").stripe_customer_id is None


@pytest.fixture
def stripe_down_app(seeded, redis_url):
    """A second app on the same database whose Stripe is a closed port."""
    down = create_app(
        make_config(seeded.config["DATABASE_URL"], redis_url, STRIPE_API_BASE=f"http://127.0.0.1:{closed_port()}")
    )
    yield down
    with down.app_context():
        db.session.remove()
        db.engine.dispose()


def test_stripe_down_is_503_with_nothing_written(api, stripe_emulator, webhooks_to_app, stripe_down_app):
    token = api.user("trader@example.com")
    down = stripe_down_app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    response = down.post(
        "/api/v1/billing/checkout", headers=bearer, json={"plan_name": "pro", "billing_cycle": "monthly"}
    )
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "billing_unavailable",
        "message": "Billing is temporarily unavailable — nothing was charged, please try again.",
    }
    api.contract.validate("POST", "/billing/checkout", response)
    assert user_row(api.app, "trader@example.com").stripe_customer_id is None
    assert audit_count(api.app) == 0
    assert stripe_emulator.client().v1.customers.list().data == []

    # A paying user: cancel and plan change are refused the same way; the local copy is untouched.
    pay(api, stripe_emulator, token)
    before, audits = subscription_rows(api.app, "trader@example.com"), audit_count(api.app)
    for path, body in (
        ("/billing/cancel", None),
        ("/billing/change-plan", {"plan_name": "pro", "billing_cycle": "yearly"}),
        ("/billing/portal", None),
    ):
        response = down.post("/api/v1" + path, headers=bearer, json=body)
        assert (response.status_code, response.get_json()["error"]) == (503, "billing_unavailable"), path
        api.contract.validate("POST", path, response)
    assert subscription_rows(api.app, "trader@example.com") == before
    assert audit_count(api.app) == audits
    assert api.get("/billing/subscription", token).get_json()["plan"] == "pro"  # reading needs no Stripe


def test_stripe_down_on_the_pricing_page_flashes_the_message(stripe_down_app, stripe_emulator):
    client = stripe_down_app.test_client()
    Auth(client).signup("browser@example.com")
    token = csrf_token_from(client.get("/pricing").get_data(as_text=True))
    response = client.post(
        "/billing/checkout", data={"plan": "pro", "cycle": "monthly", "csrf_token": token}, follow_redirects=True
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.request.path == "/pricing"
    assert "Billing is temporarily unavailable — nothing was charged, please try again." in html
    assert user_row(stripe_down_app, "browser@example.com").stripe_customer_id is None
