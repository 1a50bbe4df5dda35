"""`/healthz` with the suite's own Redis stopped (not a closed port): the host stays in the load balancer.

The operator review: with Redis down /healthz answered 503 while pages, the API and webhooks still worked, so a
Redis blip would have taken every app host out of the balancer at once. PostgreSQL down still answers 503.
"""

from __future__ import annotations

from tests.reliability.conftest import wait_until


def test_redis_stopped_healthz_answers_200_degraded_then_ok_again(app, client, services):
    assert client.get("/healthz").get_json() == {"status": "ok", "database": "ok", "cache": "ok"}

    services.stop_redis()
    response = client.get("/healthz")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"status": "degraded", "database": "ok", "cache": "unavailable"}
    assert client.get("/pricing").status_code == 200  # the pages the probe stands for do answer

    services.start_redis()
    wait_until(lambda: client.get("/healthz").get_json()["status"] == "ok", 15, 0.5, message="healthz ok again")


def test_postgres_stopped_healthz_answers_503_even_with_redis_up(app, client, services):
    services.stop_postgres()
    try:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.get_json() == {"status": "unavailable", "database": "unavailable", "cache": "ok"}
    finally:
        services.start_postgres()
    wait_until(lambda: client.get("/healthz").status_code == 200, 15, 0.5, message="healthz ok again")
