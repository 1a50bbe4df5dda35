"""The variables `flask doctor` counts as the guide's are exactly those its §2.1 block lists (when the guide is
beside the checkout)."""

from __future__ import annotations

import re

import pytest

from app.config import GUIDE_VARIABLES
from tests.guide.guide_text import find_guide


def test_the_guide_variables_are_the_guides_own():
    guide = find_guide()
    if guide is None:
        pytest.skip("the deployment guide is not beside this checkout")
    text = guide.read_text(encoding="utf-8")
    section = text[text.index("### 2.1") : text.index("## 3.")]
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", section, re.MULTILINE))
    assert set(GUIDE_VARIABLES) == listed
