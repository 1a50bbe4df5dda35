"""A 429 says how long to wait: in the HTML page, in the API's JSON message, and in Retry-After (the same figure)."""

from __future__ import annotations

import re

import pytest

from app.ratelimits import describe_wait
from tests.factories import UserFactory

WAIT = re.compile(r"Please wait (\d+) (second|minute|hour)s? and try again\.")


def waited(text: str) -> tuple[int, str]:
    match = WAIT.search(text)
    assert match, text
    return int(match.group(1)), match.group(2)


def test_the_429_page_says_how_long_to_wait(seeded, client, auth):
    statuses = [auth.login("someone@example.com", "wrong").status_code for _ in range(6)]
    assert statuses[-1] == 429, statuses
    response = auth.login("someone@example.com", "wrong")
    assert response.status_code == 429
    amount, unit = waited(response.get_data(as_text=True))
    assert unit == "second" and 1 <= amount <= 61
    assert int(response.headers["Retry-After"]) == amount  # never shorter than told: a client obeying it gets in


def test_an_hour_window_is_told_in_minutes(seeded, client, auth):
    seeded.config["RATELIMIT_LOGIN"] = "2 per hour"
    for _ in range(2):
        auth.login("someone@example.com", "wrong")
    response = auth.login("someone@example.com", "wrong")
    assert response.status_code == 429
    amount, unit = waited(response.get_data(as_text=True))
    assert unit == "minute" and 59 <= amount <= 61
    assert 3500 <= int(response.headers["Retry-After"]) <= 3601


def test_the_api_message_says_how_long_to_wait(seeded, client):
    with seeded.app_context():
        UserFactory(email="api@example.com")
    for _ in range(5):
        client.post("/api/v1/auth/token", json={"email": "api@example.com", "password": "wrong"})
    limited = client.post("/api/v1/auth/token", json={"email": "api@example.com", "password": "wrong"})
    assert limited.status_code == 429
    body = limited.get_json()
    assert body["error"] == "too_many_requests"
    amount, unit = waited(body["message"])
    assert unit == "second" and int(limited.headers["Retry-After"]) == amount


@pytest.mark.parametrize(
    "seconds, said",
    [
        (1, "1 second"),
        (45, "45 seconds"),
        (90, "90 seconds"),
        (91, "2 minutes"),
        (3600, "60 minutes"),
        (5401, "2 hours"),
    ],
)
def test_waits_are_rounded_up_into_words(seconds, said):
    assert describe_wait(seconds) == said
