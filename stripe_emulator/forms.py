"""Decode Stripe's form encoding (bracket notation) into nested Python values.

stripe-python sends ``items[0][price]=p&expand[0]=customer&metadata[plan]=pro``;
other clients (curl users, Stripe's docs) send ``expand[]=customer``. Both must
decode to the same structure so route handlers can work with plain dicts and
lists, as Stripe's API does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_TOKEN = re.compile(r"\[([^\]]*)\]")


class FormError(ValueError):
    """Raised when a key cannot be decoded; carries the offending param name."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def _split(key: str) -> list[str]:
    head, _, rest = key.partition("[")
    parts = [head]
    if rest:
        parts += _TOKEN.findall("[" + rest)
    return parts


def decode(pairs: Iterable[tuple[str, str]]) -> dict:
    """Turn (key, value) pairs into nested dicts; numeric/empty indices make lists."""
    root: dict = {}
    for key, value in pairs:
        parts = _split(key)
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # "expand[]" style: append
                part = f"__append_{len(node)}"
            if last:
                node[part] = value
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
                elif not isinstance(nxt, dict):
                    raise FormError(key, f"Invalid parameter structure for {key}")
                node = nxt
    return _listify(root)


def _listify(node: Any) -> Any:
    """Convert dicts whose keys are all indices into lists (ordered by index)."""
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if node and all(k.isdigit() or k.startswith("__append_") for k in node):

        def order(k: str) -> int:
            return int(k.rsplit("_", 1)[-1]) if k.startswith("__append_") else int(k)

        return [node[k] for k in sorted(node, key=order)]
    return node
