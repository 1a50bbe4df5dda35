"""Hostile input is a 4xx with a clear message, never a 500: lone surrogates in JSON, ids beyond PostgreSQL's
integer, control characters in paths and redirect targets; forwarded headers only from trusted proxies; the
production HTTPS redirect built on APP_BASE_URL rather than the Host header."""

from __future__ import annotations

import pytest

from app import create_app
from app.extensions import db
from tests.conftest import csrf_token_from, make_config
from tests.test_config import clean_env, production_env  # noqa: F401  (fixture re-exported for these tests)

PREFIX = "/api/v1"
SURROGATE = '"\\ud800"'


@pytest.fixture
def admin_client(seeded, client, auth):
    auth.signup("boss@example.com")
    with seeded.app_context():
        import sqlalchemy as sa

        db.session.execute(sa.text("UPDATE users SET is_admin = true"))
        db.session.commit()
        db.session.remove()
    return client


@pytest.mark.parametrize(
    "body",
    [
        f'{{"email": {SURROGATE}, "password": "correct horse"}}',
        f'{{"email": "a@example.com", "password": {SURROGATE}}}',
        f"{{{SURROGATE}: 1}}",
    ],
)
def test_a_lone_surrogate_in_json_is_400(seeded, client, body):
    response = client.post(PREFIX + "/auth/token", data=body, content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))
    assert response.get_json()["error"]


@pytest.mark.parametrize(
    "path", ["/strategies/2147483648", "/strategies/99999999999999999999", "/strategies/2147483648/edit"]
)
def test_a_path_id_beyond_an_integer_is_404(seeded, client, auth, path):
    auth.signup()
    assert client.get(path).status_code == 404


def test_an_admin_path_id_beyond_an_integer_is_404(admin_client):
    page = admin_client.get("/admin").get_data(as_text=True)
    response = admin_client.post("/admin/users/99999999999/sync", data={"csrf_token": csrf_token_from(page)})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "target", ["/account\r\nSet-Cookie: x=1", "/account\nX: y", "/account%0d%0aX: y", "/account\x7f"]
)
def test_control_characters_in_next_are_not_followed(seeded, client, auth, target):
    auth.signup("crlf@example.com")
    auth.logout()
    response = auth.login("crlf@example.com", next=target)
    assert response.status_code == 302
    assert "\n" not in response.headers["Location"] and "\r" not in response.headers["Location"]


def test_control_characters_in_the_admin_replay_next_are_not_followed(admin_client):
    page = admin_client.get("/admin").get_data(as_text=True)
    response = admin_client.post(
        "/admin/events/evt_missing/replay",
        data={"csrf_token": csrf_token_from(page), "next": "/admin\r\nX-Injected: 1"},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin") and "X-Injected" not in str(response.headers)


@pytest.mark.parametrize("path", ["/admin/%00", "/pricing%00", "/account%0d%0a", "/strategies/%01"])
def test_a_control_character_in_a_path_is_400_and_never_logged(admin_client, caplog, path):
    response = admin_client.get(path)
    assert response.status_code == 400
    assert not any("\x00" in record.getMessage() or "\x01" in record.getMessage() for record in caplog.records)


def test_forwarded_for_is_ignored_from_a_peer_that_is_no_proxy(clean_env, migrated_database, redis_url):  # noqa: F811
    app = create_app(make_config(migrated_database, redis_url, TRUST_PROXY="true"))
    client = app.test_client()
    direct = {"REMOTE_ADDR": "198.51.100.20"}  # port 8000 reached from the internet
    assert client.get("/metrics", headers={"X-Forwarded-For": "10.0.0.5"}, environ_overrides=direct).status_code == 403
    via_balancer = {"REMOTE_ADDR": "10.0.0.2"}
    assert (
        client.get("/metrics", headers={"X-Forwarded-For": "10.0.0.5"}, environ_overrides=via_balancer).status_code
        == 200
    )
    configured = create_app(make_config(migrated_database, redis_url, TRUST_PROXY="true", TRUSTED_PROXIES="192.0.2.10"))
    assert (
        configured.test_client()
        .get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, environ_overrides={"REMOTE_ADDR": "10.0.0.2"})
        .status_code
        == 200
    )
    assert (
        configured.test_client()
        .get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}, environ_overrides={"REMOTE_ADDR": "192.0.2.10"})
        .status_code
        == 403
    )


def test_a_rotating_forwarded_for_does_not_escape_the_log_in_limit(
    clean_env,  # noqa: F811
    migrated_database,
    redis_url,
    seeded,
):
    app = create_app(make_config(migrated_database, redis_url, TRUST_PROXY="true"))
    client = app.test_client()
    statuses = [
        client.post(
            PREFIX + "/auth/token",
            json={"email": "x@example.com", "password": f"guess-{i}"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
            environ_overrides={"REMOTE_ADDR": "198.51.100.20"},
        ).status_code
        for i in range(7)
    ]
    assert 429 in statuses, statuses


@pytest.mark.parametrize("config", ["gunicorn.conf.py", "deploy/gunicorn.conf.py"])
def test_gunicorn_binds_loopback_unless_told_otherwise(monkeypatch, tmp_path, config):
    import runpy
    from pathlib import Path

    for name in ("GUNICORN_BIND", "PORT"):
        monkeypatch.delenv(name, raising=False)
    # The config prepares Prometheus' multiprocess folder in os.environ: keep that inside this test.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("_SSB_PROMETHEUS_DIR_CLEARED", "1")
    settings = runpy.run_path(str(Path(__file__).resolve().parents[2] / config))
    assert settings["bind"] == "127.0.0.1:8000"


def test_the_https_redirect_goes_to_app_base_url_not_the_host_header(
    clean_env,  # noqa: F811
    migrated_database,
    redis_url,
    seeded,
):
    app = create_app(production_env(DATABASE_URL=migrated_database, REDIS_URL=redis_url))
    response = app.test_client().get("/pricing?plan=pro", base_url="http://evil.example")
    assert response.status_code == 301
    assert response.headers["Location"] == "https://billing.example.com/pricing?plan=pro"
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    "body",
    [
        b'[{"id": "evt_1", "type": "customer.updated"}]',
        b'{"id": "evt_big", "type": "customer.updated", "created": 1e20, "data": {"object": {"id": "cus_1"}}}',
        b'{"id": "evt_huge", "type": "customer.updated", "created": 100000000000000000000, '
        b'"data": {"object": {"id": "cus_1"}}}',
        b'{"id": "evt_str", "type": "customer.updated", "created": "yesterday", "data": {"object": {"id": "cus_1"}}}',
        b'{"id": "evt_neg", "type": "customer.updated", "created": -5, "data": {"object": {"id": "cus_1"}}}',
        b'{"id": "evt_bool", "type": "customer.updated", "created": true, "data": {"object": {"id": "cus_1"}}}',
    ],
)
def test_a_correctly_signed_body_of_the_wrong_shape_is_400(seeded, client, body):
    from tests.webhooks.signing import sign

    response = client.post(
        PREFIX + "/billing/webhooks/stripe",
        data=body,
        content_type="application/json",
        headers={"Stripe-Signature": sign(body, seeded.config["STRIPE_WEBHOOK_SECRET"])},
    )
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True))
    assert response.get_json()["error"] == "invalid_payload"
