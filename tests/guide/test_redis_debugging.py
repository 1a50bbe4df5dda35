"""The guide's `redis-cli` lines (the debugging commands of section 9 and the manual cache clear of section 8), run
verbatim against a Redis on redis-cli's default address, 127.0.0.1:6379, which the app then uses as its REDIS_URL.

The suite's own Redis listens on a random port, so this test starts a second, throw-away redis-server on 6379 (and
skips, saying so, when something else already listens there: it never touches a Redis it did not start)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from app import create_app
from app.extensions import db
from app.services.catalog import seed_plans_from_config
from app.services.entitlements import get_entitlements
from tests.conftest import make_config
from tests.factories import UserFactory
from tests.guide.guide_text import expected, find_guide
from tests.webhooks.signing import post_event

DEFAULT_REDIS = ("127.0.0.1", 6379)
#: Section 8, "Entitlements not updating": the manual cache clear, as the guide writes it.
MANUAL_CLEAR = 'redis-cli DEL "entitlements:<user-id>"'


def port_in_use(address: tuple[str, int]) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(address) == 0


@pytest.fixture
def default_redis(tmp_path):
    """A redis-server of our own on 127.0.0.1:6379, stopped at the end."""
    if port_in_use(DEFAULT_REDIS):
        pytest.skip("127.0.0.1:6379 is taken by a Redis this test did not start; it will not write to it")
    server = subprocess.Popen(
        ["redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port_in_use(DEFAULT_REDIS):
        assert time.monotonic() < deadline, "redis-server did not start on 6379"
        time.sleep(0.05)
    yield "redis://127.0.0.1:6379/0"
    server.terminate()
    server.wait(timeout=10)


def redis_cli(line: str, user_id: int) -> str:
    """One of the guide's lines, as typed (with the user's id in place of `<user-id>`), through a shell."""
    result = subprocess.run(
        line.replace("<user-id>", str(user_id)), shell=True, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stderr == "", f"`{line}`: {result.stdout}{result.stderr}"
    return result.stdout.strip()


def test_the_manual_clear_is_the_guides_line():
    guide = find_guide()
    if guide is None:
        pytest.skip("the deployment guide is not beside this checkout")
    assert f"`{MANUAL_CLEAR}`" in guide.read_text(encoding="utf-8")


def test_the_guides_redis_cli_lines_show_and_clear_what_the_app_keeps(
    app, migrated_database, stripe_emulator, default_redis
):
    guide_app = create_app(make_config(migrated_database, default_redis, STRIPE_API_BASE=stripe_emulator.url))
    get_line, keys_line = [line for line in expected("debugging_commands.sh").splitlines() if line.startswith("redis")]
    with guide_app.app_context():
        seed_plans_from_config()
        user_id = UserFactory(email="debug@example.com").id
        db.session.remove()
        get_entitlements(user_id)

    cached = json.loads(redis_cli(get_line, user_id))
    assert cached["plan"] == "free"

    event = {
        "id": "evt_guide_debugging",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.updated",
        "data": {"object": {"id": "cus_nobody", "object": "customer", "email": "x@example.com", "name": "X"}},
    }
    assert post_event(guide_app.test_client(), event, guide_app.config["STRIPE_WEBHOOK_SECRET"]).status_code == 200
    assert redis_cli(keys_line, user_id).splitlines() == ["webhook_processed:evt_guide_debugging"]

    assert redis_cli(MANUAL_CLEAR, user_id) == "1"
    assert redis_cli(get_line, user_id) == ""
    with guide_app.app_context():
        get_entitlements(user_id)  # the next read fills the cache again from the database
    assert json.loads(redis_cli(get_line, user_id))["plan"] == "free"
