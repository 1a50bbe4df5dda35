"""What the request line costs, counted rather than timed: its timestamp, its share of structlog's context, its
redaction and its JSON each take the short way, and the line still reads as structlog's usual one (the same keys,
values and formats; tests/ops/test_request_line.py compares the two lines whole)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from json import JSONEncoder

import structlog
from structlog.contextvars import bind_contextvars

from app.logging import (
    REDACTED,
    JsonRenderer,
    UtcTimestamper,
    Verbatim,
    _redact_mapping,
    clear_contextvars,
    holds_nothing_to_redact,
    may_hold_secret,
    merge_contextvars,
    new_request_id,
    redact,
    redact_value,
)
from tests.ops.test_request_line import only_our_handlers
from tests.perf.test_request_path import calls_to

STRIPE_KEY = "sk_live" + "_51CostOfTheLine8ZxYwVuTsRq"


def request_line(client, path: str = "/pricing") -> dict:
    with only_our_handlers() as (as_json, _, _records):
        client.get(path)
    (line,) = [r for r in as_json.records() if r["event"] == "request_completed"]
    return line


def test_the_timestamp_reads_as_structlogs_and_is_made_without_its_stamper(seeded, client):
    request_line(client)
    with calls_to(structlog.processors.TimeStamper.__call__) as counted:
        line = request_line(client)
    assert counted["TimeStamper.__call__"] == 0
    stamp = line["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", stamp), stamp
    written = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - written).total_seconds()) < 5
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})["timestamp"]
    ours = UtcTimestamper()(None, "info", {})["timestamp"]
    assert len(ours) == len(theirs) or ours.endswith(":00Z") is theirs.endswith(":00Z")
    assert abs(datetime.fromisoformat(ours[:-1]) - datetime.fromisoformat(theirs[:-1])).total_seconds() < 1


def test_a_whole_second_is_written_without_a_fraction_as_isoformat_does(monkeypatch):
    stamper = UtcTimestamper()
    for nanoseconds, expected in (
        (1_796_420_899_000_000_000, datetime.fromtimestamp(1_796_420_899, UTC)),
        (1_796_420_899_000_123_999, datetime.fromtimestamp(1_796_420_899, UTC).replace(microsecond=123)),
        (1_796_420_900_999_999_000, datetime.fromtimestamp(1_796_420_900, UTC).replace(microsecond=999_999)),
    ):
        monkeypatch.setattr("app.logging.time.time_ns", lambda n=nanoseconds: n)
        stamp = stamper(None, "info", {})["timestamp"]
        assert stamp == expected.isoformat().replace("+00:00", "Z")
        assert type(stamp) is Verbatim


def test_the_context_is_merged_from_structlogs_own_variables(seeded, client):
    clear_contextvars()
    bind_contextvars(request_id="r-1", user_id=7, flow="checkout")
    try:
        ours = merge_contextvars(None, "info", {"event": "x", "flow": "kept"})
        theirs = structlog.contextvars.merge_contextvars(None, "info", {"event": "x", "flow": "kept"})
        assert ours == theirs == {"event": "x", "flow": "kept", "request_id": "r-1", "user_id": 7}
        clear_contextvars()
        assert structlog.contextvars.get_contextvars() == {}
        assert merge_contextvars(None, "info", {"event": "y"}) == {"event": "y"}
    finally:
        clear_contextvars()
    with calls_to(structlog.contextvars.merge_contextvars, structlog.contextvars.clear_contextvars) as counted:
        line = request_line(client)
    assert line["request_id"] and sum(counted.values()) == 0


def test_the_request_line_is_not_walked_for_redaction_yet_a_secret_in_it_is(seeded, client):
    request_line(client)
    with calls_to(_redact_mapping, may_hold_secret) as counted:
        line = request_line(client)
    assert line["path"] == "/pricing"
    assert counted["_redact_mapping"] == 0  # flat and clean: returned as it is
    assert counted["may_hold_secret"] == 0  # its texts were seen before; the timestamp and request id are ours
    secret = request_line(client, f"/pricing/{STRIPE_KEY}")
    assert secret["path"] == f"/pricing/{REDACTED}"


def test_the_short_way_answers_as_the_full_walk():
    """`holds_nothing_to_redact` says True only for events the full walk returns unchanged."""
    events = [
        {"event": "ok", "path": "/a", "status": 200, "ms": 1.5, "flag": True, "none": None},
        {"event": "key", "note": f"using {STRIPE_KEY}"},
        {"event": "password", "password": "hunter22"},
        {"event": "card", "number_like": 4242424242424242},
        {"event": "card text", "note": "4242 4242 4242 4242"},
        {"event": "nested", "data": {"k": "v"}},
        {"event": "listed", "items": ["a"]},
        {"event": "bearer", "header": "Bearer abc.def"},
        {"event": "url", "dsn": "postgresql://u:p@host/db"},
        {1: "a non-text key"},
        {"event": "id", "request_id": new_request_id(), "big": 10**20, "small": 10**11},
        {"event": "split", "a": "sk", "b": "_live_x"},  # the texts are not run together: nothing to redact
    ]
    for event in events:
        if holds_nothing_to_redact(event):
            assert redact_value(event) == event, event
    assert all(holds_nothing_to_redact(e) for e in (events[0], *events[10:]))
    assert not any(holds_nothing_to_redact(e) for e in events[1:10])
    assert redact(None, "info", dict(events[1]))["note"] == f"using {REDACTED}"
    assert redact(None, "info", dict(events[2]))["password"] == REDACTED


def test_a_text_the_app_did_not_make_is_always_looked_through():
    """Verbatim marks only what the app makes (timestamps, its own request ids); a caller's id is a plain text."""
    assert type(new_request_id()) is Verbatim
    caller = {"event": "request_completed", "request_id": STRIPE_KEY}
    assert redact(None, "info", caller)["request_id"] == REDACTED


def test_the_json_is_json_dumps_text_from_one_encoder():
    renderer = JsonRenderer()
    event = {
        "event": "é ünïcode",
        "n": 3,
        "f": 0.1,
        "b": False,
        "none": None,
        "nested": {"list": [1, "two", {"three": 3.0}]},
        "odd": object(),
        "when": datetime(2026, 12, 4, tzinfo=UTC),
    }
    assert renderer(None, "info", event) == json.dumps(event, default=str)
    with calls_to(JSONEncoder.__init__, JSONEncoder.encode, JSONEncoder.iterencode) as counted:
        renderer(None, "info", event)
    assert sum(counted.values()) == 0


def test_the_request_id_is_appended_once_and_replaces_a_views_own(app):
    @app.get("/bench/own-request-id")
    def own_request_id():
        return "x", 200, {"X-Request-ID": "the-views-own-id"}

    client = app.test_client()
    sent = client.get("/bench/own-request-id", headers={"X-Request-ID": "caller-id-12345"})
    assert sent.headers.getlist("X-Request-ID") == ["caller-id-12345"]
    plain = client.get("/healthz")
    (made,) = plain.headers.getlist("X-Request-ID")
    assert len(made) == 32


def test_a_request_that_never_used_the_database_session_skips_its_teardown(seeded, client, auth):
    from sqlalchemy.orm import scoped_session

    client.get("/pricing")
    with calls_to(scoped_session.remove) as counted:
        assert client.get("/pricing").status_code == 200  # the visitor's page: no session opened
    assert counted["scoped_session.remove"] == 0
    auth.signup("session-user@example.com")
    client.get("/account")
    with calls_to(scoped_session.remove) as counted:
        assert client.get("/account").status_code == 200  # the log-in check reads alone: no session made
    assert counted["scoped_session.remove"] == 0
    with calls_to(scoped_session.remove) as counted:
        assert client.get("/strategies/").status_code == 200  # the list is read in the session: closed as before
    assert counted["scoped_session.remove"] >= 1
