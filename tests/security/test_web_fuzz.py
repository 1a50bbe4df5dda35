"""hypothesis over every web route (the JSON API has tests/security/test_schemathesis.py): path parameters,
query strings and form bodies drawn from bad unicode, huge and negative ids and control characters, sent by a
logged-in admin (so every route is reachable) with and without the CSRF token. No answer is a 5xx.

Bounded to a few examples per route and method so the whole module stays well under a minute.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.extensions import db
from tests.conftest import Auth, csrf_token_from

PARAM = re.compile(r"<(?:([a-z]+):)?([a-z_]+)>")
#: Routes that end the fuzzing session itself (tested on their own) or serve files.
SKIPPED = {"account.logout", "account.logout_everywhere", "static"}
EXAMPLES = 6

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "\ud800",
            "\udfff",
            "a\x00b",
            "\r\nX-Injected: 1",
            "\x7f",
            "\u202e",
            "\ufeff",
            "%00",
            "%ED%A0%80",
            "../../etc/passwd",
            "<script>alert(1)</script>",
            "'; DROP TABLE users; --",
            "9" * 40,
            "-1",
            "0",
            "2147483648",
            "1e20",
            "NaN",
            "https://evil.example/",
            "//evil.example",
        ]
    ),
)
IDS = st.one_of(st.integers(0, 2**31 - 1), st.integers(2**31, 2**80), st.sampled_from([0, 2**31 - 1, 2**31]))


def web_routes() -> list[tuple[str, str, str]]:
    """(rule, method, endpoint) of every non-API route, from an app of its own (listed before fixtures run)."""
    app = create_app({"ENVIRONMENT": "testing"})
    prefix = app.config["API_PREFIX"]
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(prefix + "/") or rule.endpoint in SKIPPED:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.add((rule.rule, method, rule.endpoint))
    return sorted(found)


ROUTES = web_routes()


def encode(text: str) -> str:
    """Percent-encode text for a URL, lone surrogates as the bytes a hostile client would send."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def requests(draw, rule: str):
    def value(match: re.Match) -> str:
        converter = match.group(1)
        if converter == "int":
            return str(draw(IDS))
        return encode(draw(HOSTILE_TEXT.filter(bool))) or "x"

    path = PARAM.sub(value, rule)
    keys = st.sampled_from(
        [
            "next",
            "plan",
            "cycle",
            "session_id",
            "from",
            "email",
            "password",
            "confirm",
            "current",
            "name",
            "rules",
            "start_date",
            "end_date",
            "q",
            "page",
            "user_id",
            "email_enabled",
        ]
    )
    fields = draw(st.dictionaries(keys, st.one_of(HOSTILE_TEXT, IDS.map(str)), max_size=6))
    query = "&".join(f"{encode(k)}={encode(v)}" for k, v in fields.items())
    with_token = draw(st.booleans())
    return path, query, fields, with_token


@pytest.fixture
def admin(seeded, client):
    auth = Auth(client)
    assert auth.signup("fuzz-admin@example.com", "correct horse").status_code == 302
    with seeded.app_context():
        db.session.execute(sa.text("UPDATE users SET is_admin = true"))
        db.session.commit()
        db.session.remove()
    return client


@pytest.mark.parametrize(("rule", "method", "endpoint"), ROUTES, ids=[f"{m} {r}" for r, m, _ in ROUTES])
def test_no_web_route_answers_5xx(seeded, admin, rule, method, endpoint):
    token = csrf_token_from(admin.get("/account").get_data(as_text=True))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(requests(rule))
    def check(drawn):
        path, query, fields, with_token = drawn
        data = {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in fields.items()}
        if with_token:
            data["csrf_token"] = token
        url = f"{path}?{query}" if query else path
        response = admin.open(url, method=method, data=data if method == "POST" else None)
        assert response.status_code < 500, (method, url, data, response.status_code)

    check()
