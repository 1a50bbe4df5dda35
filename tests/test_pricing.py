"""The pricing page from the database, for anonymous and logged-in visitors."""

import re

from app.services.catalog import feature_display_names

PRICES = ("$0.00", "$19.99", "$199.99", "$49.99", "$479.99")


def test_root_leads_to_pricing(seeded, client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/pricing"


def test_anonymous_visitor_sees_every_price_and_feature(seeded, client):
    page = client.get("/pricing").get_data(as_text=True)
    for price in PRICES:
        assert price in page
    for name in feature_display_names():
        assert name in page
    assert "Save $39.89 (17%) vs monthly" in page  # Starter: 12 × 19.99 − 199.99
    assert "Save $119.89 (20%) vs monthly" in page  # Pro: 12 × 49.99 − 479.99
    assert "Current plan" not in page
    assert 'href="/signup"' in page


def test_anonymous_choose_buttons_link_to_signup_without_csrf_or_cookie(seeded, client):
    """Links, not forms: the choice must survive sign-up, and a page with no token needs no session cookie."""
    response = client.get("/pricing")
    page = response.get_data(as_text=True)
    links = re.findall(r'<a class="([^"]*)" href="/signup\?plan=(\w+)&amp;cycle=(\w+)">Choose (\w+)<', page)
    assert {(plan, cycle) for _, plan, cycle, _ in links} == {
        ("starter", "monthly"),
        ("starter", "yearly"),
        ("pro", "monthly"),
        ("pro", "yearly"),
    }
    for classes, plan, cycle, text in links:
        assert f"choose-{cycle}" in classes.split() and text == plan.capitalize()  # the CSS switch still hides one
    assert "<form" not in page and "csrf_token" not in page
    assert "Set-Cookie" not in response.headers and client.get_cookie("session") is None


def test_logged_in_choose_buttons_post_plan_and_cycle_with_csrf(seeded, client, auth):
    auth.signup()
    page = client.get("/pricing").get_data(as_text=True)
    forms = re.findall(r'<form method="post" action="/billing/checkout".*?</form>', page, re.S)
    choices = {
        (re.search(r'name="plan" value="(\w+)"', f).group(1), re.search(r'name="cycle" value="(\w+)"', f).group(1))
        for f in forms
    }
    assert choices == {("starter", "monthly"), ("starter", "yearly"), ("pro", "monthly"), ("pro", "yearly")}
    assert all('name="csrf_token"' in f for f in forms)


def test_logged_in_user_sees_their_current_plan(seeded, client, auth):
    auth.signup()
    page = client.get("/pricing").get_data(as_text=True)
    free_card = re.search(r'data-plan="free".*?</article>', page, re.S).group(0)
    assert "Current plan" in free_card
    assert page.count("Current plan") == 1


def test_pricing_works_without_any_plan(app, client):
    assert client.get("/pricing").status_code == 200


def test_checkout_requires_login(seeded, client, auth):
    token = auth.token("/login")
    response = client.post("/billing/checkout", data={"plan": "pro", "cycle": "monthly", "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_the_anonymous_page_is_rendered_once_and_follows_the_catalog_and_flashes(seeded, client, auth):
    """Visitors who are not logged in share one rendering per catalog; a new price shows at once after a seed in
    this process, and a visitor with a flashed message (just logged out) gets their own page with it."""
    import sqlalchemy as sa

    from app.extensions import db
    from app.models import SubscriptionPlan
    from app.services.catalog import forget_catalog

    first = client.get("/pricing").get_data(as_text=True)
    assert client.get("/pricing").get_data(as_text=True) == first
    assert seeded.extensions["anonymous_pricing_page"][1] == first.encode()  # kept as the bytes it is sent as
    with seeded.app_context():
        db.session.execute(
            sa.update(SubscriptionPlan).where(SubscriptionPlan.name == "pro").values(price_monthly="59.99")
        )
        db.session.commit()
        forget_catalog()  # what a seed does
    page = client.get("/pricing").get_data(as_text=True)
    assert "$59.99" in page and "$49.99" not in page

    auth.signup(email="leaving@example.com")
    response = auth.logout()
    assert response.headers["Location"] == "/pricing"
    page = client.get("/pricing").get_data(as_text=True)
    assert "You have been logged out." in page
    assert "You have been logged out." not in client.get("/pricing").get_data(as_text=True)  # shown once
