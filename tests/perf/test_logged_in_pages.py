"""What a logged-in page costs: SQL statements per view, and time per view against bare Flask in the same process.

A Pro customer (paid through the emulator's Checkout) logs in through the log-in form, as the bench does; then
`/account` and `/billing` are viewed once each to fill what a running app keeps (the plan catalogue, the cached
entitlements and Stripe summary). The statements of one more view of each are counted on the engine (ceilings
below, each a test), and the time of a view is compared with bench/bare_flask.py's `hello` called in turn, in
rounds, in this process (printed; timing under a shared machine's load is not asserted).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from bench.bare_flask import app as bare_app
from tests.billing.conftest import Billing

#: Statements sent to the database by one view, each a ceiling. The log-in check reads the user, their live
#: server-side session and their subscriptions with their plans in one statement (the payment banner, the account
#: and billing pages read them from there); the account page adds one for its usage counts and email
#: confirmation, and takes its plan's features and limits from the catalogue. (Before: 9 and 3.)
CEILINGS = {"/account": 2, "/billing": 1}
#: Rounds of the timing comparison, and views of each side per round (the best round of each side counts).
ROUNDS, VIEWS = 5, 40


@contextlib.contextmanager
def statements(app):
    """The SQL statements sent while the block runs."""
    sent: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, text, params, context, executemany):
        sent.append(" ".join(text.split())[:300])

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def pro_client(seeded, client, auth, stripe_emulator):
    """The test client of a Pro customer who logged in through the form, each page viewed once."""
    seeded.config["RATELIMIT_BILLING"] = "100000000 per minute"  # checked on every view, never reached
    auth.signup()
    billing = Billing(seeded, client, auth, stripe_emulator)
    assert billing.subscribe("pro", "monthly").status_code == 200
    assert auth.logout().status_code == 302
    assert auth.login().status_code == 302
    for path in CEILINGS:
        assert client.get(path).status_code == 200  # not sent to /login
    return client


@pytest.mark.parametrize("path", list(CEILINGS))
def test_a_logged_in_view_stays_within_its_statements(app, pro_client, path):
    with statements(app) as sent:
        assert pro_client.get(path).status_code == 200
    print(path, len(sent), *sent, sep="\n  ")
    assert len(sent) <= CEILINGS[path], sent


def best_ms(client, path: str, views: int) -> float:
    started = time.perf_counter()
    for _ in range(views):
        assert client.get(path).status_code == 200
    return (time.perf_counter() - started) * 1000 / views


def test_time_of_a_logged_in_view_against_bare_flask(pro_client, capsys):
    bare = bare_app.test_client()
    best = {"bare": float("inf"), "/account": float("inf"), "/billing": float("inf")}
    for _ in range(ROUNDS):  # interleaved: each side's best round, from the same stretch of time
        best["bare"] = min(best["bare"], best_ms(bare, "/hello", VIEWS * 10))
        for path in CEILINGS:
            best[path] = min(best[path], best_ms(pro_client, path, VIEWS))
    with capsys.disabled():
        for path in CEILINGS:
            print(
                f"\n{path}: {best[path]:.2f} ms per view, bare Flask {best['bare']:.3f} ms: "
                f"{best['bare'] / best[path]:.3f} of bare Flask's rate"
            )
