"""Expected texts: the copies kept under expected/, and the deployment guide itself when it can be found."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.guide.conftest import EXPECTED, PRICE_IDS, ROOT

PLACEHOLDER_PRICE_ID = "price_XXXXX"


def find_guide() -> Path | None:
    """The deployment guide, if this checkout sits beside it: $DEPLOYMENT_GUIDE, or shared/deployment-guide.md
    in the repository's directory or one of its parents. Never required: the copies under expected/ are."""
    named = os.environ.get("DEPLOYMENT_GUIDE")
    candidates = [Path(named)] if named else [d / "shared" / "deployment-guide.md" for d in ROOT.parents]
    return next((path for path in candidates if path.is_file()), None)


def block_after(markdown: str, label: str) -> str:
    """The first fenced code block after the line `label` (its lines, with a final newline)."""
    match = re.search(rf"^{re.escape(label)}\n```[^\n]*\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"no code block after {label!r}"
    return match.group(1)


def expected(name: str) -> str:
    return (EXPECTED / name).read_text(encoding="utf-8")


def with_price_ids(text: str, price_ids: list[str] = None) -> str:
    """`price_XXXXX` replaced by the real ids, in the order they appear (Free monthly, Starter monthly and
    yearly, Pro monthly and yearly)."""
    if price_ids is None:
        price_ids = list(PRICE_IDS.values())
    parts = text.split(PLACEHOLDER_PRICE_ID)
    assert len(parts) == len(price_ids) + 1, f"{len(parts) - 1} placeholders for {len(price_ids)} price ids"
    return "".join(part + price_id for part, price_id in zip(parts, price_ids, strict=False)) + parts[-1]


def block_under(markdown: str, heading: str) -> str:
    """The first fenced code block under the heading line `heading` (blank lines between them allowed)."""
    match = re.search(rf"^{re.escape(heading)}\n\s*```[^\n]*\n(.*?)^```$", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"no code block under {heading!r}"
    return match.group(1)
