"""Redis stopped: pages still answer, with the right gates, from the database."""

from app import create_app
from app.services.catalog import seed_plans_from_config
from tests.conftest import Auth, empty_database, make_config
from tests.entitlements.conftest import add_strategies, put_on_plan
from tests.factories import UserFactory
from tests.test_health_and_errors import closed_port


def test_pages_answer_with_the_right_gates_when_redis_is_down(migrated_database):
    app = create_app(make_config(migrated_database, f"redis://127.0.0.1:{closed_port()}/0"))
    try:
        with app.app_context():
            seed_plans_from_config()
            free_id = UserFactory(email="free@example.com").id
            starter_id = UserFactory(email="starter@example.com").id
            put_on_plan(starter_id, "starter")
            add_strategies(free_id, 3)
        client = app.test_client()
        auth = Auth(client)
        assert auth.login("free@example.com").status_code == 302
        assert client.get("/strategies/").status_code == 200
        assert client.get("/account").status_code == 200
        assert client.get("/strategies/new").status_code == 403  # 3 of 3: still gated
        assert client.get("/alerts/").status_code == 403
        auth.logout()
        assert auth.login("starter@example.com").status_code == 302
        assert client.get("/strategies/new").status_code == 200
        assert client.get("/alerts/").status_code == 200
        assert client.get("/api/v1/strategies").status_code == 401  # the API still answers JSON, not 500
    finally:
        empty_database(app)
