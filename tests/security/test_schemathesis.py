"""schemathesis against `{API_PREFIX}/openapi.json`, served by the test app: every operation, called with the
bearer token of a real Pro subscriber (paid through the emulator, webhooks delivered), never answers 500 and
every answer is one the document describes — status code, content type, headers and body schema. Input the
schema allows is accepted (no 400 the document does not explain) and input that breaks it is refused.

Bounded so it stays well under a minute: a few examples per operation and mode, no deadline.

schemathesis' own pytest integration (`schema.parametrize()` on `schemathesis.pytest.from_fixture`) sets the
private `Function._nodeid`, which pytest 9.2 no longer has; the schema comes from a fixture (the app needs the
test database), so each operation is a pytest case that draws its requests with `operation.as_strategy()`.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from app.api.openapi import openapi_document
from app.services.backtesting import MAX_WINDOW
from tests.factories import UserFactory

PREFIX = "/api/v1"
EMAIL, PASSWORD = "fuzzed-pro@example.com", "correct horse"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
#: Valid input refused by design: made-up credentials (401) and an unsigned webhook delivery (400).
REFUSES_VALID_INPUT = {"issueToken", "receiveStripeEvent"}


def documented_operations() -> dict[str, dict]:
    """The document's operations by id, from an app of its own (the cases are listed before any fixture runs)."""
    with create_app({"ENVIRONMENT": "testing"}).test_request_context():
        return {
            operation["operationId"]: operation
            for item in openapi_document()["paths"].values()
            for operation in item.values()
        }


OPERATIONS = documented_operations()
#: Negative cases need something to break: a body, a parameter or a credential (this document needs none).
CASES = [
    (operation_id, mode)
    for operation_id, operation in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or operation_id != "getOpenapi"
]
EXAMPLES = 10


@st.composite
def strategy_rules(draw) -> str:
    """Rules the API accepts, in the document's syntax (any case, `=` or `:`, either order, any separators).

    The document's `rules` pattern cannot say fast < slow, so its `format: strategy-rules` names this generator
    (schemathesis still filters what it draws through the pattern).
    """
    fast = draw(st.integers(1, MAX_WINDOW - 1))
    slow = draw(st.integers(fast + 1, MAX_WINDOW))
    space = st.sampled_from(["", " ", "  ", "\t"])

    def setting(name: str, days: int) -> str:
        spelled = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        zeros = draw(st.sampled_from(["", "0"]))
        return f"{spelled}{draw(space)}{draw(st.sampled_from('=:'))}{draw(space)}{zeros}{days}"

    settings_ = [setting("fast", fast), setting("slow", slow)]
    if draw(st.booleans()):
        settings_.reverse()
    separator = draw(st.sampled_from([" ", ", ", ";", "\n", " ;\n"]))
    return draw(space) + separator.join(settings_) + draw(st.sampled_from(["", ";", "\n"]))


schemathesis.openapi.format("strategy-rules", strategy_rules())


@pytest.fixture
def pro_tokens(seeded, client, stripe_emulator, webhooks_to_app) -> dict:
    """The token pair of a user on Pro monthly, paid through the real checkout and webhooks."""
    with seeded.app_context():
        UserFactory(email=EMAIL)
    tokens = client.post(PREFIX + "/auth/token", json={"email": EMAIL, "password": PASSWORD}).get_json()
    token = tokens["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    checkout = client.post(
        PREFIX + "/billing/checkout", headers=headers, json={"plan_name": "pro", "billing_cycle": "monthly"}
    )
    assert checkout.status_code == 200, checkout.get_json()
    stripe_emulator.complete_checkout(checkout.get_json()["session_id"])
    stripe_emulator.flush()
    assert client.get(PREFIX + "/billing/subscription", headers=headers).get_json()["plan"] == "pro"
    return tokens


@pytest.fixture
def api_schema(seeded, pro_tokens):
    """The document as the app serves it, called through the app itself (WSGI)."""
    # The per-user billing and log-in limits (10 and 5 a minute) would turn the fuzzing into a test of the
    # limiter: their 429 is documented and tested in tests/api. The general API limit stays as configured.
    seeded.config["RATELIMIT_BILLING"] = "10000 per minute"
    seeded.config["RATELIMIT_LOGIN"] = "10000 per minute"
    return schemathesis.openapi.from_wsgi(PREFIX + "/openapi.json", seeded)


@pytest.mark.parametrize("operation_id, mode", CASES, ids=[f"{o}-{m.value}" for o, m in CASES])
def test_the_api_answers_as_documented_and_never_500(api_schema, pro_tokens, operation_id, mode):
    operation = api_schema.find_operation_by_id(operation_id)
    token = pro_tokens["refresh_token" if operation_id == "refreshToken" else "access_token"]
    headers = {"Authorization": f"Bearer {token}"} if OPERATIONS[operation_id].get("security", True) else {}
    checks = [c for c in CHECKS if not (c is positive_data_acceptance and operation_id in REFUSES_VALID_INPUT)]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def call(case):
        case.call_and_validate(headers=headers, checks=checks)

    call()
