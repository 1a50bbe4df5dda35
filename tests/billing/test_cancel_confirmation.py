"""Cancelling asks first: GET /billing/cancel says what happens and when; its button is the POST that cancels.

The pages, the emulator over HTTP and the real database; nothing of ours is mocked.
"""

import re
from datetime import UTC, datetime, timedelta

from app.extensions import db
from app.models import Strategy
from app.templating import date
from tests.conftest import csrf_token_from


def text_of(html: str) -> str:
    """The page's words, tags dropped and spaces squeezed (what a person reads)."""
    return re.sub(r" ([.,:;?!)])", r"\1", " ".join(re.sub(r"<[^>]+>", " ", html).split()))


def confirmation(billing):
    response = billing.client.get("/billing/cancel")
    assert response.status_code == 200, response.headers.get("Location")
    return response.get_data(as_text=True)


def test_pro_monthly_confirmation_says_until_when_what_free_lacks_and_how_to_come_back(billing):
    billing.subscribe("pro", "monthly")
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)
    html = confirmation(billing)
    words = text_of(html)

    assert "<title>Cancel your Pro plan?" in html
    assert "Cancel your Pro plan?" in words
    assert f"You keep Pro until {ends}. Then your account moves to the Free plan" in words
    # What Free lacks, in the catalog's words: Pro's allowance beside Free's, or "Not included".
    losses = text_of(html[html.index('data-testid="cancel-losses"') : html.index("</table>")])
    assert "Unlimited strategies Up to 3 strategies" in losses
    assert "Unlimited backtests 20 backtests per month" in losses
    assert "20 years of historical data 1 year of historical data" in losses
    assert "Real-time alerts Not included" in losses and "API access Not included" in losses
    assert "Paper trading" not in losses  # Free has it too
    assert "Nothing is deleted." in words and "read-only" in words
    assert f"Resume Pro from the billing page any time before {ends}" in words
    assert "scheduled change" not in words
    # The two ways out: the POST that cancels (with its CSRF token), and back to /billing keeping Pro.
    form = re.search(r'<form method="post" action="/billing/cancel"[^>]*>(.*?)</form>', html, re.S).group(1)
    assert csrf_token_from(form) and ">Cancel at period end</button>" in form
    assert re.search(r'<a class="[^"]*" href="/billing">Keep Pro</a>', form)
    [after] = billing.subscriptions()
    assert (after.cancel_at_period_end, after.updated_at) == (False, row.updated_at)  # looking changes nothing


def test_strategies_over_the_free_limit_are_counted_as_becoming_read_only(billing):
    billing.subscribe("pro", "monthly")
    with billing.app.app_context():
        start = datetime(2026, 1, 1, tzinfo=UTC)
        db.session.add_all(
            Strategy(
                user_id=billing.user().id,
                name=f"Idea {i}",
                rules="fast=10 slow=30",
                created_at=start + timedelta(minutes=i),
            )
            for i in range(5)
        )
        db.session.commit()
    words = text_of(confirmation(billing))
    assert (
        "You have 5 strategies and Free includes 3: your oldest 3 stay editable and the other 2 become read-only."
    ) in words


def test_a_scheduled_downgrade_is_named_as_dropped_and_the_cancel_releases_it(billing, stripe_emulator):
    billing.subscribe("pro", "yearly")
    assert billing.post("/billing/change", plan="starter", cycle="yearly").status_code == 303
    [row] = billing.subscriptions()
    ends = date(row.current_period_end)
    words = text_of(confirmation(billing))
    assert (
        f"Your scheduled change to Starter (yearly) is dropped: on {ends} your account moves to Free instead." in words
    )
    assert f"You keep Pro until {ends}" in words

    assert billing.post("/billing/cancel").status_code == 303
    [row] = billing.subscriptions()
    assert (row.plan.name, row.cancel_at_period_end) == ("pro", True)
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    assert sub.cancel_at_period_end is True and sub.schedule is None


def test_the_button_cancels_at_period_end_with_the_usual_flash(billing):
    billing.subscribe("pro", "monthly")
    html = confirmation(billing)
    response = billing.client.post("/billing/cancel", data={"csrf_token": csrf_token_from(html)})
    assert response.status_code == 303 and response.headers["Location"] == "/billing"
    [row] = billing.subscriptions()
    assert row.cancel_at_period_end and row.status == "active"
    [sub] = billing.stripe_subscriptions(billing.user().stripe_customer_id)
    assert sub.cancel_at_period_end is True and sub.status == "active"
    page = billing.client.get("/billing").get_data(as_text=True)
    assert f"Your Pro plan will end on {date(row.current_period_end)}. You keep it until then." in page


def test_a_free_user_is_sent_back_to_billing_with_a_message(billing):
    response = billing.client.get("/billing/cancel")
    assert response.status_code == 303 and response.headers["Location"] == "/billing"
    page = billing.client.get("/billing").get_data(as_text=True)
    assert "You are on the Free plan: there is no paid plan to cancel." in page


def test_a_plan_already_set_to_cancel_is_sent_back_to_billing_with_its_end_date(billing):
    billing.subscribe("pro", "monthly")
    billing.post("/billing/cancel")
    [row] = billing.subscriptions()
    response = billing.client.get("/billing/cancel")
    assert response.status_code == 303 and response.headers["Location"] == "/billing"
    page = billing.client.get("/billing").get_data(as_text=True)
    assert f"Your Pro plan is already set to end on {date(row.current_period_end)}. Resume it below to keep it." in page
    assert "Resume Pro" in page


def test_the_confirmation_needs_a_login(client, seeded):
    response = client.get("/billing/cancel")
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]


def test_billing_and_pricing_link_to_the_confirmation_instead_of_cancelling(billing):
    billing.subscribe("pro", "monthly")
    page = billing.client.get("/billing").get_data(as_text=True)
    assert re.search(r'<a class="btn btn-outline-danger" href="/billing/cancel">Cancel plan</a>', page)
    assert 'action="/billing/cancel"' not in page
    pricing = billing.client.get("/pricing").get_data(as_text=True)
    free_card = pricing[pricing.index('data-plan="free"') : pricing.index('data-plan="starter"')]
    assert re.search(
        r'<a class="btn btn-lg w-100 btn-outline-secondary" href="/billing/cancel">Downgrade to Free</a>', free_card
    )
    assert 'action="/billing/cancel"' not in pricing
    [row] = billing.subscriptions()
    assert not row.cancel_at_period_end  # following the links cancels nothing
