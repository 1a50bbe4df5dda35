"""A Pro payment through the Stripe emulator switches `api_access` on at the very next request (no cache step)."""

from tests.billing.conftest import Billing


def test_paying_for_pro_flips_api_access_on_the_next_request(seeded, client, auth, stripe_emulator, redis_url):
    auth.signup()
    billing = Billing(seeded, client, auth, stripe_emulator)
    token = client.post("/api/v1/auth/token", json={"email": "trader@example.com", "password": "correct horse"})
    headers = {"Authorization": f"Bearer {token.get_json()['access_token']}"}
    assert client.get("/api/v1/strategies", headers=headers).status_code == 403  # Free, and now cached
    assert client.get("/alerts/").status_code == 403
    assert billing.subscribe("pro").status_code == 200
    assert client.get("/api/v1/strategies", headers=headers).status_code == 200
    assert client.get("/alerts/").status_code == 200
