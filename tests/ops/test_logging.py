"""Structured logs: redaction of secrets and card data, request and user ids on every line, JSON in production."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from flask import current_app

from app.logging import REDACTED, get_logger, luhn_valid, redact, redact_value
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "secret",
    [
        "sk_live" + "_51H8xYzAbCdEfGhIjKlMnOpQr",
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "rk_live" + "_51H8xYzAbCdEfGhIjKlMnOp",
        "rk_test_51H8xYzAbCdEfGhIjKlMnOp",
        "whsec" + "_5f2e8c1d9a7b3e6f4c2d1a0b9e8f7a6b",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "4242424242424242",
        "4242 4242 4242 4242",
        "4000-0000-0000-0002",
        "378282246310005",  # American Express, 15 digits
    ],
)
def test_secret_shaped_values_are_redacted_wherever_they_appear(secret):
    event = redact(None, "info", {"event": f"calling with {secret} now", "detail": {"nested": [secret]}})
    assert secret not in json.dumps(event)
    assert event["event"] == f"calling with {REDACTED} now"
    assert event["detail"]["nested"] == [REDACTED]


def test_bearer_tokens_keep_the_scheme_and_lose_the_token():
    event = redact(None, "info", {"event": "upstream", "header": "Bearer abc.def-123_456=="})
    assert event["header"] == f"Bearer {REDACTED}"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "secret",
        "client_secret",
        "token",
        "refresh_token",
        "Authorization",
        "card",
        "card_number",
        "number",
        "cvc",
        "api_key",
        "Cookie",
        "set-cookie",
        "STRIPE_SECRET_KEY",
    ],
)
def test_sensitive_keys_are_redacted_whatever_their_value(key):
    event = redact(None, "info", {"event": "x", key: "hunter2", "headers": {key: "hunter2"}})
    assert event[key] == REDACTED
    assert event["headers"][key] == REDACTED
    assert "hunter2" not in json.dumps(event)


def test_passwords_inside_urls_are_redacted():
    event = redact(
        None,
        "info",
        {
            "event": "connecting to postgresql://ssb:s3cr3t-pw@db.internal:5432/ssb",
            "url": "redis://:r3dis-pw@cache:6379/0",
        },
    )
    assert event["event"] == f"connecting to postgresql://ssb:{REDACTED}@db.internal:5432/ssb"
    assert event["url"] == f"redis://:{REDACTED}@cache:6379/0"


def test_harmless_values_are_kept():
    event = {
        "event": "stripe_webhook_verified",
        "stripe_event_id": "evt_1NqX2aB3cD4eF5gH",
        "publishable_key": "pk_live_51H8xYzAbCdEfGhIjKlMnOp",  # public by design
        "created": 1732780000,  # a timestamp is not a card number
        "created_ms": 1732780000123,
        "amount": 1999,
        "request_id": "9f0c2a7e4b1d4e3f8a6b5c4d3e2f1a0b",
        "user_id": 42,
        "checkout_session_id": "cs_test_a1B2c3D4e5F6g7H8",
        "url": "https://app.example.com/billing/success?session_id=cs_test_a1B2",
    }
    assert not luhn_valid("1732780000123")
    assert redact(None, "info", dict(event)) == event


def test_a_secret_in_an_exception_message_is_redacted(log_json):
    try:
        raise RuntimeError("Stripe refused sk_live" + "_51H8xYzAbCdEfGhIjKlMnOpQr")
    except RuntimeError:
        get_logger("tests").exception("stripe_call_failed")
        logging.getLogger("some.library").exception("library_failed")
    assert "sk_live_51H8" not in log_json.text
    records = log_json.records()
    assert [r["event"] for r in records] == ["stripe_call_failed", "library_failed"]
    assert all("RuntimeError: Stripe refused [REDACTED]" in r["exception"] for r in records)


def test_stdlib_and_flask_loggers_go_through_the_same_processors(app, log_json):
    with app.app_context():
        current_app.logger.warning("flask_logger_line %s", "with-arg", extra={"password": "hunter2"})
    logging.getLogger("urllib3.connectionpool").warning("Retrying with Authorization: Bearer abc123")
    first, second = log_json.records()
    assert first["event"] == "flask_logger_line with-arg"
    assert first["level"] == "warning" and first["logger"] == "app"
    assert first["password"] == REDACTED
    assert "timestamp" in first
    assert second["event"] == f"Retrying with Authorization: Bearer {REDACTED}"


def request_lines(log_json) -> list[dict]:
    return [r for r in log_json.records() if r["event"] == "request_completed"]


def test_every_request_line_carries_a_request_id_echoed_in_the_response(client, seeded, log_json):
    response = client.get("/pricing")
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    (line,) = request_lines(log_json)
    assert line["request_id"] == request_id
    assert line["status"] == 200 and line["path"] == "/pricing" and line["method"] == "GET"
    assert "user_id" not in line


def test_a_sane_incoming_request_id_is_kept_and_an_odd_one_replaced(client, seeded, log_json):
    assert (
        client.get("/pricing", headers={"X-Request-ID": "lb-7f3a9c21-0001"}).headers["X-Request-ID"]
        == "lb-7f3a9c21-0001"
    )
    replaced = client.get("/pricing", headers={"X-Request-ID": "<script>alert(1)</script>"}).headers["X-Request-ID"]
    assert replaced != "<script>alert(1)</script>" and len(replaced) == 32
    assert [r["request_id"] for r in request_lines(log_json)] == ["lb-7f3a9c21-0001", replaced]


def test_lines_of_a_logged_in_user_carry_the_user_id(client, seeded, auth, log_json):
    auth.signup()
    client.get("/account")
    lines = request_lines(log_json)
    account = [r for r in lines if r["path"] == "/account"][-1]
    assert isinstance(account["user_id"], (int, str)) and str(account["user_id"]).isdigit()
    # Nothing leaks between requests: a later anonymous request has no user id.
    auth.logout()
    anonymous = client.application.test_client()
    anonymous.get("/pricing")
    assert "user_id" not in request_lines(log_json)[-1]


def test_api_calls_name_the_token_user_and_a_refused_token_names_nobody(client, seeded, log_json):
    """A bearer-token call's lines carry its user's id, as a browser session's do (they carried none: an API
    customer's requests could not be followed in the log)."""
    with seeded.app_context():
        user_id = UserFactory(email="api-log@example.com").id
    token = client.post("/api/v1/auth/token", json={"email": "api-log@example.com", "password": "correct horse"})
    headers = {"Authorization": "Bearer " + token.get_json()["access_token"]}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    [line] = [r for r in request_lines(log_json) if r["path"] == "/api/v1/me"]
    assert str(line["user_id"]) == str(user_id)
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    refused = [r for r in request_lines(log_json) if r["path"] == "/api/v1/me"][-1]
    assert refused["status"] == 401 and "user_id" not in refused


def test_the_signup_and_login_flow_logs_no_password_or_secret(app, client, seeded, auth, log_json):
    auth.signup(email="careful@example.com", password="a very secret passphrase")
    auth.logout()
    auth.login(email="careful@example.com", password="a very secret passphrase")
    get_logger("tests").info("config_dump", config=dict(app.config))  # the worst case: someone logs the config
    text = log_json.text
    assert "a very secret passphrase" not in text
    for name in ("SECRET_KEY", "JWT_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "ENCRYPTION_KEY"):
        assert app.config[name] not in text, name


def test_production_writes_json_lines_and_development_console_lines():
    """A real process per environment, so the root handler the factory installs is the one observed."""
    script = (
        "import os; from app import create_app; from tests.test_config import production_env; "
        "env = production_env() if os.environ['MODE'] == 'production' else {'ENVIRONMENT': 'development'}; "
        "app = create_app(env); "
        "app.logger.warning('webhook_probe', extra={'token': 'abc'})"
    )
    outputs = {}
    for mode in ("production", "development"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "MODE": mode, "HOME": "/tmp"},
        )
        assert result.returncode == 0, result.stderr
        outputs[mode] = [line for line in result.stderr.splitlines() if "webhook_probe" in line]
    (production_line,) = outputs["production"]
    record = json.loads(production_line)
    assert record["event"] == "webhook_probe" and record["level"] == "warning" and record["token"] == REDACTED
    (development_line,) = outputs["development"]
    assert development_line.lstrip().startswith("20") and "[warning  ] webhook_probe" in development_line
    assert "token=[REDACTED]" in development_line


def test_redact_value_copes_with_odd_containers():
    assert redact_value({"a": ("sk_test_abcdefghijklmnop", 1)}) == {"a": [REDACTED, 1]}
    assert redact_value(b"whsec_abcdef") == REDACTED
    deep: dict = {}
    node = deep
    for _ in range(20):
        node["child"] = {}
        node = node["child"]
    assert "[TOO DEEP]" in json.dumps(redact_value(deep))


def test_a_string_nested_past_the_depth_limit_is_written_as_too_deep():
    nested: dict = {"leaf": "kept as it is"}
    for _ in range(12):  # the leaf's mapping at depth 12, the string itself at 13: one past the limit
        nested = {"inner": nested}
    redacted = redact_value(nested)
    for _ in range(12):
        redacted = redacted["inner"]
    assert redacted == {"leaf": "[TOO DEEP]"}
