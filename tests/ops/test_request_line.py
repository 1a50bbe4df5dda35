"""The request line `request_completed` is written straight to the app's own handlers (`EventWriter`): no stdlib
LogRecord is made for it, yet the line is the one the usual structlog path writes, redacted the same way, and a
handler of anyone else still receives it."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from json import JSONEncoder

from structlog.contextvars import bind_contextvars, clear_contextvars

from app.logging import REDACTED, get_logger, redact
from tests.ops.conftest import LogCapture
from tests.perf.test_request_path import calls_to

STRIPE_KEY = "sk_live" + "_51RequestLine8ZxYwVuTsRq"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


class Records:
    """Counts the LogRecords stdlib logging makes for the request line while active."""

    def __init__(self) -> None:
        self.request_lines = 0
        self.factory = logging.getLogRecordFactory()

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.factory(*args, **kwargs)
        if isinstance(record.msg, dict) and record.msg.get("event") == "request_completed":
            self.request_lines += 1
        return record


@contextmanager
def only_our_handlers():
    """The root logger with nothing but a JSON and a console capture rendered by the app's formatter (as in
    production, where the root holds the app's one handler; pytest's own capture is set aside meanwhile), and a
    count of the LogRecords made."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    as_json, as_console = LogCapture(json_lines=True), LogCapture(json_lines=False)
    root.handlers[:] = [as_json.handler, as_console.handler]
    root.setLevel(logging.INFO)
    records = Records()
    logging.setLogRecordFactory(records)
    try:
        yield as_json, as_console, records
    finally:
        logging.setLogRecordFactory(records.factory)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def the_usual_line(capture: LogCapture, request_id: str, **fields) -> dict:
    """What structlog's usual path (a LogRecord through the handler and ProcessorFormatter) writes for the line."""
    before = len(capture.lines)
    bind_contextvars(request_id=request_id)
    try:
        get_logger("app.request").info("request_completed", **fields)
    finally:
        clear_contextvars()
    (line,) = capture.lines[before:]
    return json.loads(line)


def test_the_request_line_makes_no_log_record_and_reads_as_the_usual_one(seeded, client):
    with only_our_handlers() as (as_json, as_console, records):
        response = client.get("/pricing")
        assert response.status_code == 200
        assert records.request_lines == 0
        (line,) = [r for r in as_json.records() if r["event"] == "request_completed"]
        (console,) = [text for text in as_console.lines if "request_completed" in text]
        fields = {"method": "GET", "path": "/pricing", "status": 200, "duration_ms": line["duration_ms"]}
        usual = the_usual_line(as_json, response.headers["X-Request-ID"], **fields)
        assert records.request_lines == 1  # the usual path does make one: the count sees it
    assert line.pop("timestamp") < usual.pop("timestamp")
    assert list(line) == list(usual) and line == usual
    assert "[info     ] request_completed" in console and "path=/pricing" in console and "status=200" in console


def test_no_secret_reaches_the_request_line(seeded, client):
    with only_our_handlers() as (as_json, as_console, records):
        client.get(f"/reset/{JWT}/{STRIPE_KEY}", headers={"X-Request-ID": STRIPE_KEY})
    assert records.request_lines == 0  # written by the direct path
    (line,) = [r for r in as_json.records() if r["event"] == "request_completed"]
    assert line["path"] == f"/reset/{REDACTED}/{REDACTED}" and line["request_id"] == REDACTED
    for text in (as_json.text, as_console.text):
        assert "request_completed" in text
        assert STRIPE_KEY not in text and JWT not in text and "eyJhbGciOiJIUzI1NiJ9" not in text


def test_another_handler_gets_the_record_and_levels_are_kept(seeded, client):
    received: list[logging.LogRecord] = []
    foreign = logging.Handler()
    foreign.emit = received.append  # type: ignore[method-assign]
    root = logging.getLogger()
    with only_our_handlers() as (as_json, _, records):
        root.addHandler(foreign)
        client.get("/pricing")
        client.get("/healthz")  # a probe's line is DEBUG: below the root's INFO, written nowhere
        as_json.handler.setLevel(logging.WARNING)
        client.get("/pricing")  # above the foreign handler's level only
        as_json.handler.setLevel(logging.DEBUG)
        root.setLevel(logging.DEBUG)
        client.get("/healthz")
    paths = [r["path"] for r in as_json.records() if r["event"] == "request_completed"]
    assert paths == ["/pricing", "/healthz"]
    assert [r["level"] for r in as_json.records() if r["event"] == "request_completed"] == ["info", "debug"]
    got = [(r.levelno, r.msg["path"]) for r in received if isinstance(r.msg, dict)]
    assert got == [(logging.INFO, "/pricing"), (logging.INFO, "/pricing"), (logging.DEBUG, "/healthz")]
    assert records.request_lines == 3  # one record, made for the foreign handler alone, per line it received
    assert all(r.name == "app.request" and r.msg["event"] == "request_completed" for r in received)


def test_a_json_line_builds_no_encoder(seeded, client):
    """`json.dumps(…, default=str)` would build a JSONEncoder per line; the renderer's is built once."""
    client.get("/pricing")
    with only_our_handlers() as (as_json, _, _records), calls_to(JSONEncoder.__init__) as counted:
        client.get("/pricing")
    assert [r["path"] for r in as_json.records() if r["event"] == "request_completed"] == ["/pricing"]
    assert counted["JSONEncoder.__init__"] == 0


def test_card_numbers_in_other_scripts_digits_are_still_redacted():
    """ASCII text is checked with a 0-9 pattern; any other text with the Unicode one, as before."""
    arabic_indic = "\u0664\u0662" * 8  # 4242 4242 4242 4242 in Arabic-Indic digits, which pass the Luhn check
    event = redact(None, "info", {"event": "paid", "note": f"card {arabic_indic}", "ascii": "card 4242424242424242"})
    assert event["note"] == f"card {REDACTED}" and event["ascii"] == f"card {REDACTED}"
