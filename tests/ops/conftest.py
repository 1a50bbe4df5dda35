"""Fixtures of the operations tests: captured log output rendered by the app's own formatter."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.logging import build_formatter


class LogCapture:
    """Every log line written while the fixture is active, rendered exactly as production would."""

    def __init__(self, json_lines: bool):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(build_formatter(json=json_lines))
        self.handler.setLevel(logging.DEBUG)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]

    def records(self) -> list[dict]:
        """The JSON lines, parsed (only for json_lines=True; tracebacks are inside their line)."""
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def log_json():
    """Log lines as production writes them (JSON), from every logger, at every level."""
    capture = LogCapture(json_lines=True)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture.handler)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture.handler)
    root.setLevel(previous_level)
