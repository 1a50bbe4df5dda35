"""stripe-python's declared response shapes, read from its resource classes' annotations.

``shape_problems(cls, obj)`` walks a JSON object against ``cls`` recursively: every declared field is
present (nested objects, list items and embedded lists included) but those Stripe omits (``OMITTED``),
embedded lists carry exactly ``ListObject``'s fields and ``total_count``, and enum fields hold a declared value. ``expandable_paths(cls)`` lists
the ``expand[]`` paths the annotations allow (``ExpandableField`` anywhere under the class).
"""

from __future__ import annotations

import builtins
import sys
import typing
from typing import Any, ForwardRef

import stripe
from stripe._list_object import ListObject
from stripe._stripe_object import StripeObject

ONLY_WHEN_DELETED = {"deleted"}
#: Fields the library declares that Stripe leaves out of these objects (docs.stripe.com examples, the fixtures of
#: tests/fixtures/stripe-docs): an event's ``account`` and ``context`` exist only on a connected account's events
#: (Connect); a Checkout Session's ``line_items`` is included only when expanded, never in a webhook.
OMITTED = {"event": {"account", "context"}, "checkout.session": {"line_items"}}
#: A list embedded in an object (``invoice.lines``...) as Stripe sends it: ``ListObject``'s fields and ``total_count``
#: (the library declares no ``total_count``; a list endpoint's own answer has none).
LIST_FIELDS = {"object", "data", "has_more", "total_count", "url"}


class _Names(dict):
    """Names visible to an annotation: enclosing classes, the module, the ``stripe`` package, builtins."""

    def __init__(self, chain: tuple):
        super().__init__()
        self.chain = chain

    def __missing__(self, name: str) -> Any:
        for cls in reversed(self.chain):
            if name in vars(cls):
                return vars(cls)[name]
        module = vars(sys.modules[self.chain[0].__module__])
        for space in (module, vars(typing), vars(builtins)):
            if name in space:
                return space[name]
        return getattr(stripe, name, Any)


def resolve(annotation: Any, chain: tuple) -> Any:
    """The annotation as a typing object, forward references and strings evaluated in the class's scope."""
    if isinstance(annotation, ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        try:
            return eval(annotation, {}, _Names(chain))  # noqa: S307 - the library's own annotation text
        except Exception:
            return Any
    origin = typing.get_origin(annotation)
    if origin is None:
        return annotation
    if origin is typing.Literal:
        return annotation
    args = tuple(resolve(a, chain) for a in typing.get_args(annotation))
    if origin is typing.Union:
        return typing.Union[args]  # noqa: UP007  (built from a tuple of types at run time)
    return origin[args] if origin in (list,) else annotation.copy_with(args)


def _chain_of(cls: type) -> tuple:
    """``cls`` and the classes it is nested in (``Invoice``, ``Invoice.Lines``...), outermost first."""
    parts = cls.__qualname__.split(".")
    node = sys.modules[cls.__module__]
    chain = []
    for part in parts:
        node = getattr(node, part)
        chain.append(node)
    return tuple(chain)


def declared(cls: type) -> dict[str, Any]:
    """Public, non-ClassVar fields of ``cls`` and its bases, resolved."""
    out = {}
    for base in reversed(cls.__mro__):
        for name, annotation in base.__dict__.get("__annotations__", {}).items():
            text = annotation if isinstance(annotation, str) else repr(annotation)
            if name.startswith("_") or "ClassVar" in text:
                continue
            out[name] = resolve(annotation, _chain_of(base))
    return out


def _members(tp: Any) -> tuple:
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)


def _object_classes(tp: Any) -> list[type]:
    return [
        m for m in _members(tp) if isinstance(m, type) and issubclass(m, StripeObject) and not issubclass(m, ListObject)
    ]


def _value_problems(tp: Any, value: Any, path: str, problems: list, seen: set) -> None:
    if value is None or tp is Any:
        return
    members = _members(tp)
    enum = [v for m in members if typing.get_origin(m) is typing.Literal for v in typing.get_args(m)]
    if enum and isinstance(value, str) and value not in enum and str not in members:
        problems.append(f"{path}: {value!r} not among {enum}")
    for m in members:
        origin = typing.get_origin(m)
        if origin is ListObject or (isinstance(m, type) and issubclass(m, ListObject)):
            if isinstance(value, dict):
                if set(value) != LIST_FIELDS:
                    problems.append(f"{path}: list fields {sorted(value)} != {sorted(LIST_FIELDS)}")
                item = (typing.get_args(m) or (Any,))[0]
                for i, x in enumerate(value.get("data", [])):
                    _value_problems(item, x, f"{path}.data[{i}]", problems, seen)
            return
        if origin is list and isinstance(value, list):
            for i, x in enumerate(value):
                _value_problems(typing.get_args(m)[0], x, f"{path}[{i}]", problems, seen)
            return
    classes = _object_classes(tp)
    if isinstance(value, dict) and classes:
        named = [c for c in classes if getattr(c, "OBJECT_NAME", None) == value.get("object")]
        cls = (named or classes)[0]
        if len(classes) == 1 or named:
            shape_problems(cls, value, path, problems, seen)


def shape_problems(cls: type, obj: dict, path: str = "", problems=None, seen=None) -> list[str]:
    """Where ``obj`` departs from the shape ``cls`` declares (empty when it conforms)."""
    problems = [] if problems is None else problems
    seen = set() if seen is None else seen
    omitted = ONLY_WHEN_DELETED | OMITTED.get(getattr(cls, "OBJECT_NAME", ""), set())
    for name, tp in declared(cls).items():
        where = f"{path}.{name}" if path else name
        if name not in obj:
            if name not in omitted:
                problems.append(f"{where}: missing")
            continue
        _value_problems(tp, obj[name], where, problems, seen)
    return problems


def _is_expandable(tp: Any) -> bool:
    """``ExpandableField[X]`` is ``Union[str, X]`` with X a resource."""
    members = _members(tp)
    return str in members and bool(_object_classes(tp))


def expandable_paths(cls: type, prefix: str = "", depth: int = 0) -> list[str]:
    """Every ``expand[]`` path the annotations of ``cls`` allow, through nested objects and lists."""
    paths = []
    if depth > 3:
        return paths
    for name, tp in declared(cls).items():
        path = prefix + name
        inner = tp
        for m in _members(tp):
            if typing.get_origin(m) is list:
                inner = typing.get_args(m)[0]
            elif typing.get_origin(m) is ListObject:
                path, inner = path + ".data", typing.get_args(m)[0]
        if _is_expandable(inner):
            paths.append(path)
            continue
        for nested in _object_classes(inner):
            if path.count(".") < 3:
                paths += expandable_paths(nested, path + ".", depth + 1)
    return paths
