"""Structured logs: structlog for our events, the same processors for every stdlib logger.

One line per event, JSON in production (for the log pipeline), aligned key=value text in development and
testing (for people). Every line of a request carries `request_id` (taken from a sane incoming `X-Request-ID`,
else generated, and echoed in the response) and `user_id` once the user is known. Before anything is written,
`redact` removes secrets and card data, so a careless `log.info("x", headers=dict(request.headers))` cannot leak
the Stripe key or a session cookie. The one line of every request, `request_completed`, is written by
`EventWriter`: the same line, rendered by the handler's own formatter without a stdlib LogRecord in between.

The rest of the app logs through `get_logger()`:

    from app.logging import get_logger
    log = get_logger(__name__)
    log.info("stripe_webhook_verified", event_id=event.id, type=event.type)
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from json import JSONEncoder
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, TypeGuard, cast

import structlog
from flask import Flask, g, request
from flask.globals import request_ctx
from flask.logging import default_handler
from flask_login import current_user, user_logged_in
from structlog.contextvars import _CONTEXT_VARS, STRUCTLOG_KEY_PREFIX, bind_contextvars

REDACTED = "[REDACTED]"

#: A key containing any of these names a value that is never logged.
SENSITIVE_KEY_PARTS = (
    "secret",
    "password",
    "token",
    "authorization",
    "card",
    "number",
    "cvc",
    "api_key",
    "apikey",
    "cookie",
    "encryption_key",
    "private_key",
)

#: Values that are secrets whatever key they hide under. Publishable keys (`pk_…`) are public and stay.
SECRET_VALUE_PATTERNS = (
    re.compile(r"\b[sr]k_(?:live|test)_[0-9A-Za-z]+"),  # Stripe secret and restricted keys
    re.compile(r"\b[sr]k_[0-9A-Za-z]{16,}"),  # the same without the mode, as some emulators mint them
    re.compile(r"\bwhsec_[0-9A-Za-z]+"),  # webhook signing secrets
    re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE),  # Authorization header values
    re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWTs (access and refresh tokens)
)
#: The password of a URL with credentials (DATABASE_URL, REDIS_URL): `scheme://user:[REDACTED]@host`.
URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")

#: A card number as people write it: 13 to 19 digits in a row, or grouped the usual ways with one kind of separator
#: (space or dash) throughout: 4-4-4-4 and 4-4-4-4-3, 4-6-5 (American Express), 4-6-4 (Diners Club). Redacted when
#: the Luhn check says "card number". Any other grouping is not a card: a file name's `20261204-213726` (8-6), a
#: date, a phone number, even when its digits pass the Luhn check (as one in ten do).
CARD_NUMBER = re.compile(
    r"\b(?:\d{13,19}"
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"
    r"|\d{4}([ -])\d{6}\2\d{4,5})\b"
)
#: A digit and 12 more digits, spaces or dashes: what CARD_NUMBER needs before it can match (every text it matches
#: is at least 13 such characters, the first a digit), a looser pattern without CARD_NUMBER's alternatives.
CARD_LENGTH_DIGITS = re.compile(r"\d[\d -]{12}")
#: The same for ASCII text (nearly every string logged), where `\d` is 0-9: a character range is cheaper to test
#: than `\d`'s Unicode category.
CARD_LENGTH_ASCII_DIGITS = re.compile(r"[0-9][0-9 -]{12}")


#: The shortest text any pattern above can match (`://:p@`; `whsec_x`, `eyJa.b.` are longer): "GET" or "info" hold
#: no secret.
SHORTEST_SECRET = 6


def may_hold_secret(text: str) -> bool:
    """False when no pattern above can match `text`: each needs a literal (`k_`, `whsec_`, `eyJ`, `://…@`, the
    scheme word) or 13 digits, and looking for those is much cheaper than running the patterns. Most strings of
    a log line (event names, paths, ids, times) hold none of them and are kept as they are."""
    if len(text) < SHORTEST_SECRET:
        return False
    if "k_" in text or "whsec_" in text or "eyJ" in text or ("://" in text and "@" in text):
        return True
    folded = text.casefold()
    if "bearer" in folded or "basic" in folded:
        return True
    if len(text) < 13:
        return False
    return (CARD_LENGTH_ASCII_DIGITS if text.isascii() else CARD_LENGTH_DIGITS).search(text) is not None


#: Characters allowed in an incoming X-Request-ID; anything else (or too long) gets a fresh id.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{8,128}$")

#: Endpoints polled every few seconds by the load balancer and Prometheus: their request line is DEBUG.
QUIET_ENDPOINTS = frozenset({"health.healthz", "metrics.scrape", "static"})

_HANDLER_NAME = "ssb"


def luhn_valid(digits: str) -> bool:
    """The checksum every payment card number satisfies (and most timestamps and ids do not)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return REDACTED if luhn_valid(digits) else match.group(0)


class Verbatim(str):
    """A text the app made itself that holds no secret by construction (a line's timestamp, a request id made from
    random bytes): redaction keeps it as it is without looking through it. Only the app's own code makes one; a
    text from outside (a path, a caller's X-Request-ID) is a plain `str` and is always looked through."""

    __slots__ = ()


#: Short texts already found to hold nothing any pattern can match: a log's event names, logger names, methods and
#: paths repeat line after line, and a dictionary look-up is cheaper than `may_hold_secret`'s scans.
_CLEAN_TEXTS: dict[str, bool] = {}
#: The longest text remembered there (hashing a long text costs more than it saves).
CLEAN_TEXT_MAX_LENGTH = 200


def remember_clean(text: str) -> None:
    """Note that `text`, found to hold nothing any pattern can match, need not be looked through again (if short)."""
    if len(text) <= CLEAN_TEXT_MAX_LENGTH:
        if len(_CLEAN_TEXTS) >= 4096:  # ids and times never repeat: start over rather than grow for ever
            _CLEAN_TEXTS.clear()
        _CLEAN_TEXTS[text] = True


def redact_text(text: str) -> str:
    """`text` with every secret-shaped substring replaced."""
    short = len(text) <= CLEAN_TEXT_MAX_LENGTH
    if short and text in _CLEAN_TEXTS:
        return text
    if not may_hold_secret(text):
        if short:
            remember_clean(text)
        return text
    for pattern in SECRET_VALUE_PATTERNS:
        if pattern.pattern.startswith(r"\b(Bearer"):
            text = pattern.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    text = URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return CARD_NUMBER.sub(_redact_card, text)


#: Any of SENSITIVE_KEY_PARTS, in one scan.
SENSITIVE_KEY = re.compile("|".join(re.escape(part) for part in SENSITIVE_KEY_PARTS), re.IGNORECASE)


#: Whether each key seen so far names a secret: a log's keys are few and repeat, so each is judged once.
_SENSITIVE_NAMES: dict[str, bool] = {}


def is_sensitive_key(key: Any) -> bool:
    """Whether the key names a secret (any of SENSITIVE_KEY_PARTS in it, whatever the case)."""
    name = key if isinstance(key, str) else str(key)
    known = _SENSITIVE_NAMES.get(name)
    if known is None:
        if len(_SENSITIVE_NAMES) >= 4096:  # keys made up at run time: start over rather than grow for ever
            _SENSITIVE_NAMES.clear()
        known = _SENSITIVE_NAMES[name] = SENSITIVE_KEY.search(name) is not None
    return known


#: The smallest and the first too large an integer with a card number's 13 to 19 digits.
_CARD_INT_RANGE = (10**12, 10**19)


#: How deep `redact_value` follows nested containers before it writes "[TOO DEEP]" instead.
MAX_DEPTH = 12


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` with sensitive keys and secret-shaped strings redacted, nested containers included."""
    if _depth > MAX_DEPTH:  # a cycle or absurd nesting: say so rather than recurse forever
        return "[TOO DEEP]"
    kind = type(value)  # the common exact types first: a log line is mostly strings and numbers
    if kind is str:
        return redact_text(value)
    if kind is Verbatim:
        return value
    if kind is int:
        return _redact_int(value)
    if kind is float or kind is bool or value is None:
        return value
    if kind is dict or isinstance(value, Mapping):
        return _redact_mapping(value, _depth)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _redact_int(value)
    if isinstance(value, (list, tuple)):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((redact_value(v, _depth + 1) for v in value), key=str)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def _redact_mapping(value: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
    """A mapping's copy: the value of a sensitive key redacted (unless empty), every other value as `redact_value`
    makes it (strings, the commonest, without the call)."""
    redacted: dict[Any, Any] = {}
    known = _SENSITIVE_NAMES
    for key, item in value.items():
        sensitive = known.get(key) if type(key) is str else None  # a key seen before, without the call
        if sensitive is None:
            sensitive = is_sensitive_key(key)
        if sensitive and item not in (None, ""):
            redacted[key] = REDACTED
        elif type(item) is str and depth < MAX_DEPTH:
            redacted[key] = redact_text(item)
        else:
            redacted[key] = redact_value(item, depth + 1)
    return redacted


def _redact_int(value: int) -> int | str:
    """An integer with a card number's length that passes the Luhn check is redacted; any other is kept."""
    low, high = _CARD_INT_RANGE
    if not low <= abs(value) < high:
        return value
    return REDACTED if luhn_valid(str(abs(value))) else value


def redact(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """structlog processor: remove secrets and card data from every key and value of the event."""
    if type(event_dict) is dict and holds_nothing_to_redact(event_dict):
        return event_dict
    return redact_value(event_dict)


#: The separator of an event's texts when they are looked through at once: no pattern can match across it.
_TEXT_SEPARATOR = "\x00"


def holds_nothing_to_redact(event_dict: dict[Any, Any]) -> bool:
    """True when `redact_value` would return an equal copy of this event: a flat one (strings, numbers, booleans,
    None), under keys that name no secret, whose texts no pattern can match and whose integers are too short or
    too long for a card number. Most lines are such (the request line always is, unless its path or a caller's
    request id looks like a secret), and their texts are then looked through at once, joined, rather than one by
    one; anything else (a nested value, a sensitive key, a text that may hold a secret) answers False and takes
    the full walk. Joining keeps every text's own matches (the separator is in no pattern), so a False negative is
    impossible; a match across two texts only costs the full walk."""
    known, clean = _SENSITIVE_NAMES, _CLEAN_TEXTS
    low, high = _CARD_INT_RANGE
    texts = []
    for key, value in event_dict.items():
        if type(key) is not str:
            return False
        sensitive = known.get(key)
        if sensitive is None:
            sensitive = is_sensitive_key(key)
        if sensitive:
            return False
        kind = type(value)
        if kind is str:
            if value not in clean:  # a text found clean before (an event name, a path) is not looked at again
                texts.append(value)
        elif kind is int:
            if low <= abs(value) < high:
                return False
        elif not (kind is Verbatim or kind is float or kind is bool or value is None):
            return False
    if not texts:
        return True
    if may_hold_secret(texts[0] if len(texts) == 1 else _TEXT_SEPARATOR.join(texts)):
        return False
    for text in texts:  # each is clean if all of them together are
        remember_clean(text)
    return True


def _shared_processors() -> list[Any]:
    """What every line goes through, whether it came from structlog or from a stdlib logger."""
    return [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        UtcTimestamper(),
    ]


#: structlog's context variables by their full names (`structlog_request_id`), as `bind_contextvars` makes them.
_STRUCTLOG_VARS: dict[str, contextvars.ContextVar[Any]] = _CONTEXT_VARS
_PREFIX_LENGTH = len(STRUCTLOG_KEY_PREFIX)


def merge_contextvars(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's `merge_contextvars`: each value bound with `bind_contextvars` (and not cleared) is added to the
    event, unless the event has that key already. structlog's copies the whole context and looks through every
    variable in it (Flask's, Werkzeug's, SQLAlchemy's, …); this one reads structlog's own few variables, in the
    order they were first bound."""
    for name, var in _STRUCTLOG_VARS.items():
        value = var.get(Ellipsis)
        if value is not Ellipsis:
            event_dict.setdefault(name[_PREFIX_LENGTH:], value)
    return event_dict


def clear_contextvars() -> None:
    """structlog's `clear_contextvars`, reading structlog's own variables only (see `merge_contextvars`)."""
    for var in _STRUCTLOG_VARS.values():
        if var.get(Ellipsis) is not Ellipsis:
            var.set(Ellipsis)


class UtcTimestamper:
    """structlog's `TimeStamper(fmt="iso", utc=True)`: `timestamp`, the UTC time to the microsecond in ISO 8601
    with a `Z` (`2026-12-04T19:08:19.206357Z`, and no fraction at a whole second, as `datetime.isoformat` writes
    it). The date and time to the second are formatted once per second; each line adds its microseconds."""

    def __init__(self) -> None:
        self.second: tuple[int, str] = (-1, "")  # one attribute, replaced whole: threads never see half of it

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        known, prefix = self.second
        if second != known:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self.second = (second, prefix)
        microseconds = nanoseconds // 1000
        event_dict["timestamp"] = Verbatim(f"{prefix}.{microseconds:06d}Z" if microseconds else f"{prefix}Z")
        return event_dict


@functools.lru_cache(maxsize=8)
def _json_encoder(default: Any) -> JSONEncoder:
    """`json.dumps(…, default=…)` builds a new JSONEncoder for every call; one per `default`, built once, writes
    the same text."""
    return JSONEncoder(default=default)


def encode_json(event_dict: Any, **options: Any) -> str:
    """The JSON of a log line: `json.dumps(event_dict, **options)` (JSONRenderer's options: `default=str`, given to
    it in `build_formatter`), with the encoder of a lone `default` built once."""
    if options.keys() - {"default"}:
        return JSONEncoder(**options).encode(event_dict)
    return _json_encoder(options.get("default")).encode(event_dict)


class JsonRenderer:
    """structlog's `JSONRenderer(serializer=encode_json, default=str)`: the same text, `json.dumps(event_dict,
    default=str)`, from the C encoder `json.dumps` itself makes for each call, made once.

    That encoder is made without the circular-reference check (its table of containers being encoded would be
    shared between calls): it renders what `redact` returns, a copy whose nesting is cut at MAX_DEPTH, or a flat
    event (`holds_nothing_to_redact`), neither of which can refer to itself."""

    def __init__(self) -> None:
        self.encode: Any = (
            c_make_encoder(None, str, encode_basestring_ascii, None, ": ", ", ", False, False, True)
            if c_make_encoder is not None
            else None
        )

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        if self.encode is None or type(event_dict) is not dict:
            return encode_json(event_dict, default=str)
        return "".join(self.encode(event_dict, 0))


class SiteFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's ProcessorFormatter, which can also render an event dict handed to it directly.

    `render` runs the same processors (redaction, then the renderer) as `format` does for a structlog record, so a
    line written by `EventWriter` is the line this formatter would have written for the same event.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What `format` runs once the record is unpacked; the meta keys it removes are never added by `render`.
        self.event_processors = [
            p for p in self.processors if p is not structlog.stdlib.ProcessorFormatter.remove_processors_meta
        ]
        # The stack and exception renderers act only on an event holding their key (`stack_info`, `exc_info`):
        # an event without either, such as the request line, skips them.
        self.plain_processors = [
            p
            for p in self.event_processors
            if not isinstance(p, (structlog.processors.StackInfoRenderer, structlog.processors.ExceptionRenderer))
        ]

    def render(self, logger: logging.Logger, method_name: str, event_dict: dict[str, Any]) -> str:
        """The line of `event_dict` (a structlog event after the shared processors)."""
        rendered: Any = event_dict
        plain = "stack_info" not in event_dict and "exc_info" not in event_dict
        for processor in self.plain_processors if plain else self.event_processors:
            rendered = processor(logger, method_name, rendered)
        return rendered


def build_formatter(json: bool = False) -> SiteFormatter:
    """The stdlib formatter that renders every record: JSON lines, or console lines for people.

    Redaction runs last before rendering, after the traceback became text, so a secret in an exception message
    is caught too. Also used by `deploy/gunicorn.conf.py` for gunicorn's own loggers.
    """
    renderer: Any
    if json:
        renderer = JsonRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    return SiteFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


def configure_structlog() -> None:
    """structlog hands its events to stdlib logging, whose root handler renders them (see `build_formatter`)."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # first: a line below the level costs nothing more
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def configure_root_logger(json: bool, level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Put our one handler on the root logger (replacing a previous one of ours, keeping anyone else's)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.name == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(build_formatter(json=json))
    root.addHandler(handler)
    root.setLevel(level)
    # No line shows where it was logged from (file, function, line number): without this, every record walks the
    # stack to find it (the logging HOWTO's first optimisation).
    logging._srcfile = None
    # Per-request chatter of the HTTP clients: our own events say what was called and how it went.
    for noisy in ("urllib3", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """The app's logger: `get_logger(__name__).info("event_name", key=value)`."""
    if not structlog.is_configured():  # logged before create_app: still through stdlib and the redaction
        configure_structlog()
    return structlog.stdlib.get_logger(name, **initial_values)


def handlers_of(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of `logger` reaches, in the order stdlib logging calls them (up to the root, or to the
    first logger that does not propagate)."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(current.handlers)
        current = current.parent if current.propagate else None
    return found


def takes_events_directly(handler: logging.Handler) -> TypeGuard[logging.StreamHandler]:
    """Whether `handler` is one of ours: a plain StreamHandler rendering with a `SiteFormatter`, no filters."""
    return (
        type(handler) is logging.StreamHandler and isinstance(handler.formatter, SiteFormatter) and not handler.filters
    )


class EventWriter:
    """A hot event written without stdlib logging's LogRecord round trip: `EventWriter(name).log(level, event, **kw)`
    writes the line `get_logger(name).log(level, event, **kw)` would.

    The usual path takes the event through structlog's processors, into a stdlib LogRecord, through the logger's
    and the handler's checks, and into `ProcessorFormatter.format`, which copies the record to unpack the event
    again. Here the event dict is built by the same shared processors, and each handler of ours
    (`takes_events_directly`) has its formatter render it and writes the line under its lock, as StreamHandler
    does: the same fields, key order, level filtering and redaction. Any other handler (a test's capture, a
    library's) is handed the record structlog would have made. A logger with filters of its own, or without any
    handler (stdlib's last resort), takes the usual path. (Sentry's logging integration, which hooks
    `Logger.callHandlers`, therefore gets no breadcrumb of these lines: they say nothing an error report needs.)
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.usual = get_logger(name)
        self.shared = _shared_processors()

    def log(self, level: int, event: str, **fields: Any) -> None:
        """Log `event` with `fields` at `level` (a stdlib level number), if the logger is enabled for it."""
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        handlers = handlers_of(logger)
        if logger.filters or not handlers:
            self.usual.log(level, event, **fields)
            return
        method_name = logging.getLevelName(level).lower()
        event_dict: Any = {**fields, "event": event}
        for processor in self.shared:
            event_dict = processor(logger, method_name, event_dict)
        record: logging.LogRecord | None = None
        for handler in handlers:
            if level < handler.level:
                continue
            if takes_events_directly(handler):
                self.write(handler, method_name, dict(event_dict), level)
                continue
            if record is None:
                record = self.record(level, method_name, event_dict)
            handler.handle(record)

    def write(self, handler: logging.StreamHandler, method_name: str, event_dict: dict[str, Any], level: int) -> None:
        """Render and write one line to a handler of ours, as `StreamHandler.emit` would (errors included)."""
        formatter = cast(SiteFormatter, handler.formatter)
        handler.acquire()
        try:
            line = formatter.render(self.logger, method_name, event_dict)
            handler.stream.write(line + handler.terminator)
            handler.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - reported the way logging reports a failing handler
            handler.handleError(self.record(level, method_name, event_dict))
        finally:
            handler.release()

    def record(self, level: int, method_name: str, event_dict: dict[str, Any]) -> logging.LogRecord:
        """The record structlog's `wrap_for_formatter` has stdlib logging make for this event."""
        logger = self.logger
        return logger.makeRecord(
            logger.name,
            level,
            "(unknown file)",
            0,
            event_dict,
            (),
            None,
            "(unknown function)",
            {"_logger": logger, "_name": method_name},
        )


def put_request_id(headers: Any, request_id: str) -> None:
    """`headers["X-Request-ID"] = request_id`: appended to a response that has none (always, unless a view set its
    own, which is replaced), without `Headers.set`'s checks. The id has no line break: it is the app's own hex, or a
    caller's that SANE_REQUEST_ID matched."""
    for name, _ in headers:
        if name.lower() == "x-request-id":
            headers["X-Request-ID"] = request_id
            return
    headers._list.append(("X-Request-ID", request_id))


def _structlog_var(key: str) -> contextvars.ContextVar[Any]:
    """The context variable `bind_contextvars(key=…)` sets (made now, unset, when nothing bound it yet)."""
    name = f"{STRUCTLOG_KEY_PREFIX}{key}"
    if name not in _STRUCTLOG_VARS:
        bind_contextvars(**{key: Ellipsis})  # structlog makes and registers it; Ellipsis is its "not bound"
    return _STRUCTLOG_VARS[name]


#: What `bind_contextvars(request_id=…)` sets: each request sets it directly.
request_id_var = _structlog_var("request_id")


def bind_user_id(user_id: int | str | None) -> None:
    """Add `user_id` to every later line of this request (log-in, API token and session users alike)."""
    if user_id is not None:
        bind_contextvars(user_id=user_id)


def request_id_from(header: str | None) -> str:
    """The caller's request id when it looks like one (so a trace spans the load balancer), else a new one."""
    if header and SANE_REQUEST_ID.match(header):
        return header
    return new_request_id()


def new_request_id() -> str:
    """`uuid.uuid4().hex`: 16 random bytes with the version (4) and variant bits of a UUID set, as hex, without
    building the UUID object (its int arithmetic costs several times the random bytes)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return Verbatim(raw.hex())  # hex digits: no secret, and the log line need not look through it


def configure_logging(app: Flask) -> None:
    """Set up structlog and the root handler for `app`, and bind request_id / user_id to each request."""
    configure_structlog()
    configure_root_logger(json=app.config["ENVIRONMENT"] == "production", level=app.config.get("LOG_LEVEL", "INFO"))
    # Flask's own handler would print app.logger lines a second time, unformatted and unredacted.
    app.logger.removeHandler(default_handler)
    log = EventWriter("app.request")  # the one line of every request: straight to our handlers

    # Both hooks read the request context once rather than through a proxy per attribute (`request.…`, `g.…`).
    @app.before_request
    def bind_request_context() -> None:
        clear_contextvars()
        ctx = request_ctx._get_current_object()  # type: ignore[attr-defined]
        this, saved = ctx.request, g._get_current_object()
        saved.request_started = time.perf_counter()
        # The header straight from the environ: `headers.get` of a header the request lacks (nearly always) raises
        # and catches a KeyError on the way.
        request_id = saved.request_id = request_id_from(this.environ.get("HTTP_X_REQUEST_ID"))
        request_id_var.set(request_id)  # bind_contextvars(request_id=…), without its loop and tokens
        # A session or remember-me user is loaded now (one query it would make anyway) so that even the first
        # line carries user_id; an anonymous visitor costs no user loading at all.
        # The user is read through Flask-Login's proxy once: each read of `current_user` is a context lookup and a
        # call of Flask-Login's `_get_user`, which looks `g` up twice more.
        if ctx.session.get("_user_id") or (
            "HTTP_COOKIE" in this.environ and this.cookies.get(app.config.get("REMEMBER_COOKIE_NAME", "remember_token"))
        ):
            user = current_user._get_current_object()
            if user and user.is_authenticated:
                bind_user_id(user.get_id())

    @app.after_request
    def log_request(response):
        saved = g._get_current_object()
        request_id = getattr(saved, "request_id", None)
        if request_id:
            put_request_id(response.headers, request_id)
            started = getattr(saved, "request_started", None)
            duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
            this = request._get_current_object()
            log.log(
                logging.DEBUG if this.endpoint in QUIET_ENDPOINTS else logging.INFO,
                "request_completed",
                method=this.method,
                path=this.path,
                status=response.status_code,
                duration_ms=duration_ms,
            )
        return response

    @app.teardown_request
    def unbind_request_context(exc: BaseException | None) -> None:
        clear_contextvars()

    @user_logged_in.connect_via(app)
    def bind_logged_in_user(sender, user, **extra) -> None:
        bind_user_id(user.get_id())
