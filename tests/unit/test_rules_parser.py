"""The strategy rules' syntax: what is read, and what is refused with a message quoting it."""

from __future__ import annotations

import re

import pytest

from app.services.strategies import RULES_PATTERN, StrategyError, read_rules

READ = [
    ("", (20, 50)),
    ("   ", (20, 50)),
    ("fast=10 slow=30", (10, 30)),
    ("slow=30 fast=10", (10, 30)),
    ("FAST : 5, Slow: 250", (5, 250)),
    ("fast=1;slow=2", (1, 2)),
    ("fast = 007\nslow = 020", (7, 20)),
]

REFUSED = [
    ("fast slow=30", "needs = and a number"),
    ("fast=10", "do not set slow"),
    ("fast=10 slow=30 fast=12", "set fast twice"),
    ("fast=10 speed=3 slow=30", "cannot set “speed”"),
    ("fast=30 slow=10", "1 ≤ fast < slow ≤ 250"),
    ("fast=0 slow=10", "1 ≤ fast < slow ≤ 250"),
    ("fast=10 slow=251", "1 ≤ fast < slow ≤ 250"),
    ("fast=ten slow=30", "whole number of trading days"),
    ("fast=١٠ slow=30", "whole number of trading days"),
    ("fast=10 slow=99999999999999999999", "whole number of trading days"),
    ("=10 slow=30", "Could not read"),
]


@pytest.mark.parametrize(("text", "windows"), READ)
def test_rules_that_are_read(text, windows):
    rules = read_rules(text)
    assert (rules.fast, rules.slow) == windows


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_rules_that_are_refused(text, message):
    with pytest.raises(StrategyError) as refused:
        read_rules(text)
    assert refused.value.code == "invalid_rules"
    assert message in refused.value.message


@pytest.mark.parametrize("text", [text for text, _ in READ] + [text for text, _ in REFUSED])
def test_the_documented_pattern_agrees_with_the_reader(text):
    """The OpenAPI pattern accepts what the reader reads (it cannot check fast < slow, nor digits beyond ASCII)."""
    try:
        rules = read_rules(text)
    except StrategyError:
        rules = None
    matches = re.match(RULES_PATTERN, text) is not None
    if rules is not None:
        assert matches
    elif "fast=30 slow=10" != text:
        assert not matches
