"""API fixtures: bearer tokens from the real token endpoint, and a client that checks every answer against the
served OpenAPI document (status documented, body valid for its schema)."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from tests.factories import UserFactory

PREFIX = "/api/v1"
PASSWORD = "correct horse"


class Contract:
    """The OpenAPI document served by the app, used to validate real responses."""

    def __init__(self, document: dict):
        self.document = document

    def response_spec(self, method: str, path: str, status: int) -> dict:
        operation = self.document["paths"][path][method.lower()]
        assert str(status) in operation["responses"], f"{method} {path} answered {status}: not documented"
        spec = operation["responses"][str(status)]
        if "$ref" in spec:
            spec = self.document["components"]["responses"][spec["$ref"].rsplit("/", 1)[-1]]
        return spec

    def validate(self, method: str, path: str, response) -> None:
        spec = self.response_spec(method, path, response.status_code)
        schema = spec["content"]["application/json"]["schema"]
        assert response.is_json, f"{method} {path} {response.status_code} is not JSON"
        Draft202012Validator(
            {**schema, "components": self.document["components"]}, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).validate(response.get_json())


class Api:
    """The JSON API through the Flask test client; each answer is validated against the contract."""

    def __init__(self, app, client, contract: Contract):
        self.app, self.client, self.contract = app, client, contract
        self.checked: list[tuple[str, str, int]] = []

    def user(self, email: str) -> str:
        """A user (made by the factory) and an access token from `POST /auth/token`."""
        with self.app.app_context():
            UserFactory(email=email)
        return self.call("POST", "/auth/token", json={"email": email, "password": PASSWORD}).get_json()["access_token"]

    def call(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.open(PREFIX + path, method=method, headers=headers, **kwargs)
        self.contract.validate(method, path, response)
        self.checked.append((method, path, response.status_code))
        return response

    def get(self, path, token=None, **kwargs):
        return self.call("GET", path, token, **kwargs)

    def post(self, path, token=None, **kwargs):
        return self.call("POST", path, token, **kwargs)


@pytest.fixture
def contract(client) -> Contract:
    response = client.get(PREFIX + "/openapi.json")
    assert response.status_code == 200
    return Contract(response.get_json())


@pytest.fixture
def api(seeded, client, contract) -> Api:
    return Api(seeded, client, contract)
