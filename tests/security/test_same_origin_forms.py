"""Over HTTPS a form post must come from this site: its Origin decides (a browser that strips the Referer still
sends it), else its Referer; a post naming another site, or none, is refused with a message that says which. The
CSRF token is checked besides, and the API and Stripe's webhooks (no cookie, no CSRF) are not concerned."""

from __future__ import annotations

import pytest

from app.security import FOREIGN_FORM_MESSAGE, UNKNOWN_SOURCE_MESSAGE
from tests.conftest import csrf_token_from
from tests.factories import UserFactory

SITE = "https://localhost"


@pytest.fixture
def member(seeded):
    from app.extensions import db

    with seeded.app_context():
        UserFactory(email="trader@example.com")
        db.session.remove()
    return seeded


def log_in_over_https(app, headers: dict[str, str], host: str = "localhost"):
    """A log-in POST with a valid CSRF token, over HTTPS, with exactly `headers` for Origin and Referer."""
    client = app.test_client()
    page = client.get("/login", base_url=f"https://{host}")
    token = csrf_token_from(page.get_data(as_text=True))
    return client.post(
        "/login",
        base_url=f"https://{host}",
        data={"email": "trader@example.com", "password": "correct horse", "csrf_token": token},
        headers=headers,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": SITE},  # a privacy extension stripped the Referer: Origin is still sent with a POST
        {"Referer": SITE + "/login"},  # no Origin (an older browser)
        {"Origin": SITE, "Referer": SITE + "/login"},  # what browsers send
        {"Origin": "null", "Referer": SITE + "/login"},  # Origin names no site: the Referer decides
    ],
    ids=["origin-only", "referer-only", "both", "null-origin-same-referer"],
)
def test_a_form_from_this_site_is_accepted_with_origin_or_referer(member, headers):
    response = log_in_over_https(member, headers)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/account")


def test_the_origin_of_app_base_url_is_this_site_whatever_host_was_asked(member):
    member.config["APP_BASE_URL"] = "https://billing.example.com"
    response = log_in_over_https(member, {"Origin": "https://billing.example.com"}, host="10.0.0.5:8000")
    assert response.status_code == 302, response.get_data(as_text=True)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "https://evil.example", "Referer": SITE + "/login"},  # the Origin decides
        {"Referer": "https://evil.example/page"},
        {"Origin": "http://localhost"},  # this host over plain HTTP is another origin
    ],
    ids=["foreign-origin", "foreign-origin-same-referer", "foreign-referer", "http-origin"],
)
def test_a_form_from_another_site_is_refused_and_told_so(member, headers):
    response = log_in_over_https(member, headers)
    assert response.status_code == 400
    assert FOREIGN_FORM_MESSAGE in response.get_data(as_text=True)
    assert "Your form expired" not in response.get_data(as_text=True)


@pytest.mark.parametrize("headers", [{}, {"Origin": "null"}], ids=["neither", "null-origin"])
def test_a_form_naming_no_site_is_refused_and_told_why(member, headers):
    response = log_in_over_https(member, headers)
    assert response.status_code == 400
    assert UNKNOWN_SOURCE_MESSAGE in response.get_data(as_text=True)


def test_a_bad_token_is_still_refused_from_this_site(member):
    client = member.test_client()
    response = client.post(
        "/login",
        base_url=SITE,
        data={"email": "trader@example.com", "password": "correct horse", "csrf_token": "forged"},
        headers={"Origin": SITE},
    )
    assert response.status_code == 400 and "Your form expired" in response.get_data(as_text=True)


def test_the_api_and_plain_http_are_not_concerned(member):
    api = member.test_client().post(
        "/api/v1/auth/token",
        base_url=SITE,
        json={"email": "trader@example.com", "password": "wrong password"},
        headers={"Origin": "https://evil.example"},
    )
    assert api.status_code == 401  # bearer tokens: no cookie for another site's page to ride
    client = member.test_client()
    token = csrf_token_from(client.get("/login").get_data(as_text=True))
    local = client.post(
        "/login", data={"email": "trader@example.com", "password": "correct horse", "csrf_token": token}
    )
    assert local.status_code == 302  # plain HTTP (a development server): the token alone, as before
