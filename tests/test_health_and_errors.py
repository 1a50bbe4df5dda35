"""`/healthz` with the real parts up and down; error pages in HTML and JSON; rollback on 500."""

import socket

import sqlalchemy as sa

from app import create_app
from app.extensions import db
from app.models import User
from tests.conftest import make_config


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_ok(app, client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "cache": "ok"}


def test_healthz_names_both_when_both_are_down():
    config = make_config(
        f"postgresql://postgres@127.0.0.1:{closed_port()}/ssb_test", f"redis://127.0.0.1:{closed_port()}/0"
    )
    response = create_app(config).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unavailable", "cache": "unavailable"}


def test_healthz_names_the_database_when_it_is_down(migrated_database, redis_url):
    app = create_app(make_config(f"postgresql://postgres@127.0.0.1:{closed_port()}/ssb_test", redis_url))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}


def test_healthz_names_the_cache_when_redis_is_down_and_stays_in_the_balancer(migrated_database):
    """Pages, the API and webhooks work without Redis: a 503 would take every host out of the balancer at once."""
    app = create_app(make_config(migrated_database, f"redis://127.0.0.1:{closed_port()}/0"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "degraded", "database": "ok", "cache": "unavailable"}
    with app.app_context():
        db.engine.dispose()


def test_a_probe_with_a_part_down_logs_one_line_not_a_traceback(migrated_database, capfd):
    """A load balancer probes every few seconds: with Redis down each probe wrote a 3 KB traceback."""
    app = create_app(make_config(migrated_database, f"redis://127.0.0.1:{closed_port()}/0"))
    capfd.readouterr()
    for _ in range(2):
        assert app.test_client().get("/healthz").status_code == 200
    output = "".join(capfd.readouterr())
    assert output.count("healthz_cache_failed") == 2 and "Connection refused" in output, output
    assert "Traceback" not in output, output
    with app.app_context():
        db.engine.dispose()


def test_not_found_is_html_for_pages_and_json_for_the_api(app, client):
    page = client.get("/no-such-page")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "We could not find that page." in page.get_data(as_text=True)
    api = client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.get_json() == {"error": "not_found", "message": "No such API endpoint or resource."}


def test_500_rolls_the_session_back(app):
    @app.get("/api/v1/_boom")
    def boom():
        db.session.add(User(email="dup@example.com", password_hash="x"))
        db.session.add(User(email="dup@example.com", password_hash="x"))
        db.session.flush()  # IntegrityError: the handler must roll back

    client = app.test_client()
    response = client.get("/api/v1/_boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": "internal_error",
        "message": "Something went wrong on our side. Please try again.",
    }
    assert client.get("/healthz").status_code == 200
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0
