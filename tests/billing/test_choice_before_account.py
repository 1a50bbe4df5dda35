"""A plan chosen before having an account: pricing → sign-up or log-in → review (GET /billing/checkout) → Checkout.

The choice travels in links (`?plan=pro&cycle=yearly`): the POST of the pricing page's form could not survive the
log-in redirect (it came back as a GET and answered 405).
"""

import re
from html import unescape
from urllib.parse import urlsplit

from app.services.catalog import PLAN_CATALOG
from tests.billing.conftest import query, session_id_from
from tests.factories import UserFactory

PRO = next(spec for spec in PLAN_CATALOG if spec.name == "pro")


def signup_with_choice(client, auth, plan: str, cycle: str, email: str = "new@example.com"):
    path = f"/signup?plan={plan}&cycle={cycle}"
    return client.post(
        path,
        data={"email": email, "password": "correct horse", "confirm": "correct horse", "csrf_token": auth.token(path)},
    )


def hidden_fields(html: str, action: str) -> dict[str, str]:
    """The hidden inputs of the page's form that posts to `action`, as the browser would send them."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', html, re.S)
    assert form, f"no form posting to {action}"
    fields = {}
    for tag in re.findall(r"<input[^>]*>", form.group(0)):
        attributes = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        if attributes.get("type") == "hidden":
            fields[attributes["name"]] = unescape(attributes.get("value", ""))
    return fields


def login_link(html: str) -> str:
    return unescape(re.search(r'Already have an account\? <a href="([^"]+)">Log in</a>', html).group(1))


def test_signup_page_shows_the_choice_and_carries_it(seeded, client):
    html = client.get("/signup?plan=pro&cycle=monthly").get_data(as_text=True)
    assert (
        "You chose <strong>Pro</strong>, billed monthly — <strong>$49.99/month</strong>. "
        "Create your account, then log in to confirm and pay."
    ) in html
    assert 'action="/signup?plan=pro&amp;cycle=monthly"' in html
    link = login_link(html)
    assert urlsplit(link).path == "/login"
    assert query(link) == {"next": "/billing/checkout?plan=pro&cycle=monthly"}
    assert "&" not in urlsplit(link).query  # the next URL's own "&" is encoded, not a second parameter

    yearly = client.get("/signup?plan=pro&cycle=yearly").get_data(as_text=True)
    assert "billed yearly — <strong>$479.99/year</strong>" in yearly


def test_signup_with_a_choice_then_log_in_lands_on_the_review_page(seeded, client, auth):
    response = signup_with_choice(client, auth, "pro", "yearly")
    assert response.status_code == 302
    login = response.headers["Location"]
    assert urlsplit(login).path == "/login" and query(login) == {"next": "/billing/checkout?plan=pro&cycle=yearly"}
    assert client.get("/account").status_code == 302  # sign-up logs nobody in
    assert "Check your email: we sent a message to new@example.com." in client.get(login).get_data(as_text=True)
    response = auth.login("new@example.com", next=query(login)["next"])
    assert response.headers["Location"] == "/billing/checkout?plan=pro&cycle=yearly"

    review = client.get(response.headers["Location"])
    assert review.status_code == 200
    html = review.get_data(as_text=True)
    assert "Review your plan" in html
    assert 'data-testid="review-plan">Pro<' in html
    assert 'data-testid="review-cycle">Billed yearly<' in html
    assert 'data-testid="review-price">$479.99 / year<' in html
    assert "You save $119.89 (20%) vs monthly" in html
    for display_name, _ in PRO.features.values():
        assert f"<span>{display_name}</span>" in html
    fields = hidden_fields(html, "/billing/checkout")
    assert fields.pop("csrf_token") and fields == {"plan": "pro", "cycle": "yearly"}
    assert ">Continue to secure checkout</button>" in html
    assert '<a class="btn btn-outline-secondary btn-lg" href="/pricing">Choose another plan</a>' in html

    monthly = client.get("/billing/checkout?plan=starter&cycle=monthly").get_data(as_text=True)
    assert 'data-testid="review-price">$19.99 / month<' in monthly
    assert 'data-testid="review-saving"' not in monthly


def test_review_page_posts_to_the_emulators_checkout(seeded, client, auth, stripe_emulator):
    signup_with_choice(client, auth, "pro", "yearly")
    auth.login("new@example.com")
    html = client.get("/billing/checkout?plan=pro&cycle=yearly").get_data(as_text=True)
    customers = stripe_emulator.client().v1.customers.list(params={"email": "new@example.com"})
    assert customers.data == []  # reviewing touches nothing in Stripe

    response = client.post("/billing/checkout", data=hidden_fields(html, "/billing/checkout"))
    assert response.status_code == 303
    assert response.headers["Location"].startswith(stripe_emulator.url + "/c/pay/cs_")
    session = stripe_emulator.client().v1.checkout.sessions.retrieve(session_id_from(response.headers["Location"]))
    assert session.metadata["plan"] == "pro" and session.metadata["billing_cycle"] == "yearly"

    stripe_emulator.complete_checkout(session.id)
    success = client.get(f"/billing/success?session_id={session.id}").get_data(as_text=True)
    assert 'data-testid="success-plan">Pro<' in success and "$479.99" in success


def test_log_in_from_the_signup_page_keeps_the_choice(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    link = login_link(client.get("/signup?plan=starter&cycle=monthly").get_data(as_text=True))
    login_page = client.get(link).get_data(as_text=True)
    assert 'value="/billing/checkout?plan=starter&amp;cycle=monthly"' in login_page  # the form's hidden `next`
    response = auth.login(next=query(link)["next"])
    assert response.status_code == 302
    assert response.headers["Location"] == "/billing/checkout?plan=starter&cycle=monthly"
    assert 'data-testid="review-plan">Starter<' in client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_login_redirect_of_a_checkout_link_keeps_the_choice(seeded, client, auth):
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    response = client.get("/billing/checkout?plan=pro&cycle=monthly")
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    next_url = query(response.headers["Location"])["next"]
    assert next_url == "/billing/checkout?plan=pro&cycle=monthly"
    response = auth.login(next=next_url)
    assert response.headers["Location"] == next_url
    assert client.get(next_url).status_code == 200


def test_a_bare_checkout_url_after_login_ends_on_pricing_with_a_message(seeded, client, auth):
    """The old dead end: /login?next=/billing/checkout used to GET a POST-only URL and answer 405."""
    with seeded.app_context():
        UserFactory(email="trader@example.com")
    response = auth.login(next="/billing/checkout")
    assert response.headers["Location"] == "/billing/checkout"
    response = client.get("/billing/checkout")
    assert response.status_code == 303 and response.headers["Location"] == "/pricing"
    page = client.get("/pricing").get_data(as_text=True)
    assert "Choose a plan." in page and 'class="alert alert-danger' in page


def test_invalid_choices_are_ignored_by_signup_and_refused_by_the_review(seeded, client, auth):
    for choice in (
        "plan=gold&cycle=monthly",
        "plan=free&cycle=monthly",
        "plan=pro&cycle=weekly",
        "plan=pro",
        "cycle=yearly",
        "plan=&cycle=",
        "plan=" + "x" * 500 + "&cycle=monthly",
        "plan=PRO&cycle=Monthly",
    ):
        response = client.get("/signup?" + choice)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, choice
        assert "Start on the Free plan. No card needed." in html and "You chose" not in html, choice
        assert login_link(html) == "/login", choice
    response = signup_with_choice(client, auth, "gold", "monthly")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    auth.login("new@example.com")

    for plan, cycle, message in (
        ("gold", "monthly", "There is no plan called"),
        ("free", "monthly", "The Free plan needs no payment"),
        ("starter", "weekly", "Choose monthly or yearly."),
        (None, "monthly", "Choose a plan."),
        ("pro", None, "Choose a billing cycle."),
    ):
        params = {k: v for k, v in (("plan", plan), ("cycle", cycle)) if v is not None}
        response = client.get("/billing/checkout", query_string=params)
        assert response.status_code == 303 and response.headers["Location"] == "/pricing", params
        assert message in client.get("/pricing").get_data(as_text=True), params


def test_a_paying_user_is_sent_to_the_plan_change_confirmation(billing, stripe_emulator):
    billing.subscribe("starter", "monthly")
    response = billing.client.get("/billing/checkout?plan=pro&cycle=yearly")
    assert response.status_code == 303
    assert response.headers["Location"] == "/billing/change?plan=pro&cycle=yearly"
    confirm = billing.client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'data-testid="change-to">Pro · yearly<' in confirm

    # A logged-in visitor following a sign-up link with a choice goes the same way.
    response = billing.client.get("/signup?plan=pro&cycle=yearly")
    assert response.headers["Location"] == "/billing/checkout?plan=pro&cycle=yearly"

    # The plan they already have: said so, nothing opened in Stripe.
    response = billing.client.get("/billing/checkout?plan=starter&cycle=monthly")
    assert response.status_code == 303 and response.headers["Location"] == "/pricing"
    assert "You are already on Starter monthly." in billing.client.get("/pricing").get_data(as_text=True)
    assert len(billing.stripe_subscriptions(billing.user().stripe_customer_id)) == 1
