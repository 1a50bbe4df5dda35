"""What stripe-python declares about each request: the parameters of every operation, read from the library.

stripe-python is generated from Stripe's OpenAPI description: each service method sends one
``(method, path)`` and annotates its ``params`` with a TypedDict whose keys, nested TypedDicts,
lists and ``Literal`` enums are the parameters Stripe accepts. This module reads those declarations
(service sources with ``ast``, TypedDicts with ``typing.get_type_hints``) so the emulator refuses
what Stripe refuses — an unknown key, a value of the wrong type, a value outside an enum — with
Stripe's error shape, without a hand-copied list that could drift from the library.

:func:`operation` maps a served route to its params TypedDict; :func:`check` walks a decoded
request against it.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import re
import sys
import typing
from pathlib import Path
from typing import Any

import stripe
from stripe._request_options import RequestOptions
from typing_extensions import is_typeddict

from .errors import StripeError, invalid, unknown_param

STRIPE_DIR = Path(stripe.__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\{[^}]*\}|<[^>]*>")
REQUEST_OPTIONS = frozenset(RequestOptions.__annotations__)
_BOOLEANS = ("true", "false", "True", "False", "1", "0")


def template(path: str) -> str:
    """``/v1/customers/{customer}`` and ``/v1/customers/<cid>`` both become ``/v1/customers/{}``."""
    return _PLACEHOLDER.sub("{}", path)


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """``name -> module`` for every ``from stripe.params... import Name`` of a service module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stripe.params"):
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _request_call(fn: ast.FunctionDef) -> tuple[str, str] | None:
    """The ``(method, path template)`` a service method passes to ``self._request``."""
    for node in ast.walk(fn):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_request"
            and len(node.args) >= 2
        ):
            continue
        method, path = node.args[0], node.args[1]
        if isinstance(path, ast.Call) and isinstance(path.func, ast.Attribute):
            path = path.func.value
        if (
            isinstance(method, ast.Constant)
            and isinstance(path, ast.Constant)
            and isinstance(method.value, str)
            and isinstance(path.value, str)
        ):
            return method.value.upper(), path.value
    return None


def _params_name(fn: ast.FunctionDef) -> str | None:
    """The TypedDict name in ``params: Optional["XParams"]`` (or ``params: "XParams"``)."""
    for arg in fn.args.args + fn.args.kwonlyargs:
        if arg.arg == "params" and arg.annotation is not None:
            for node in ast.walk(arg.annotation):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    return node.value
    return None


@functools.cache
def operations() -> dict[tuple[str, str], tuple[str, str]]:
    """``(METHOD, path template) -> (params module, TypedDict name)`` for every v1 service method."""
    ops = {}
    for path in sorted(STRIPE_DIR.rglob("*_service.py")):
        if "v2" in path.relative_to(STRIPE_DIR).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imported_names(tree)
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            call, name = _request_call(fn), _params_name(fn)
            if call and name in imported and call[1].startswith("/v1/"):
                ops[(call[0], template(call[1]))] = (imported[name], name)
    return ops


@functools.cache
def operation(method: str, path: str) -> type | None:
    """The params TypedDict stripe-python declares for ``method path`` (a route or a template), or None."""
    found = operations().get((method.upper(), template(path)))
    if found is None:
        return None
    return getattr(importlib.import_module(found[0]), found[1])


class _Unknown:
    """Stands for a name only type checkers can see; subscripting it stays unknown."""

    def __class_getitem__(cls, _item: Any) -> Any:
        return Any


class _Names(dict):
    """Names for evaluating a params module's annotations: the module's own, then ``Any``.

    Some params TypedDicts inherit the library's request options, whose annotations name classes
    imported only for type checkers; those keys are not request parameters and are dropped anyway.
    """

    def __missing__(self, name: str) -> Any:
        return getattr(builtins, name, _Unknown)


@functools.cache
def fields(typed_dict: type) -> dict[str, Any]:
    """A TypedDict's parameters and their resolved types (``NotRequired`` stripped, request options left out)."""
    names = _Names(vars(sys.modules[typed_dict.__module__]))
    hints = typing.get_type_hints(typed_dict, localns=names)
    return {k: v for k, v in hints.items() if k not in REQUEST_OPTIONS}


def literals(tp: Any) -> list[str] | None:
    """The values of the ``Literal`` enum in ``tp`` (``''``, Stripe's "unset", left out), or None if it is none."""
    values = [
        v for member in _members(tp) if typing.get_origin(member) is typing.Literal for v in typing.get_args(member)
    ]
    values = [v for v in values if v != ""]
    return values or None


def _members(tp: Any) -> tuple:
    """The alternatives of a Union, or ``(tp,)``."""
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Union else (tp,)


def _unsettable(tp: Any) -> bool:
    """``Literal['']`` among the alternatives: posting an empty string unsets the parameter."""
    return any(typing.get_origin(m) is typing.Literal and "" in typing.get_args(m) for m in _members(tp))


def _kind(tp: Any) -> str:
    """The wire shape a declared type wants: enum, str, int, float, bool, object, map, list or any."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "enum"
    if origin is list:
        return "list"
    if origin is dict:
        return "map"
    if is_typeddict(tp):
        return "object"
    if isinstance(origin, type) and issubclass(origin, dict):
        return "map"
    return {str: "str", int: "int", float: "float", bool: "bool"}.get(tp, "any")


def _shape_error(name: str, kind: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``kind``, or None when it does (form values arrive as strings)."""
    if kind in ("str", "enum", "int", "float", "bool") and not isinstance(value, str):
        return f"Invalid {name}: expected a single value, not an object or array"
    if kind == "int" and not re.fullmatch(r"-?\d+", value):
        return f"Invalid integer: {value}"
    if kind == "float" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        return f"Invalid decimal: {value}"
    if kind == "bool" and value not in _BOOLEANS:
        return f"Invalid boolean: {value}"
    if kind in ("object", "map") and not isinstance(value, dict):
        return f"Invalid object for {name}"
    if kind == "list" and not isinstance(value, (list, str)):
        return f"Invalid array for {name}"
    return None


def _check_value(name: str, tp: Any, value: Any) -> None:
    """Raise Stripe's ``invalid_request_error`` naming ``name`` unless ``value`` fits the declared ``tp``."""
    if value == "" and (_unsettable(tp) or _kind(tp) in ("str", "any", "map", "list", "object")):
        return
    enum = literals(tp) or []
    # ``Literal[...] | str`` is the library's room for values added later; the enum is what it declares.
    members = [
        m
        for m in _members(tp)
        if not (typing.get_origin(m) is typing.Literal and typing.get_args(m) == ("",)) and not (enum and m is str)
    ]
    errors = []
    for member in members:
        kind = _kind(member)
        if kind == "enum":
            if isinstance(value, str) and value in enum:
                return
            errors.append(f"Invalid {name}: must be one of " + ", ".join(enum))
            continue
        error = _shape_error(name, kind, value)
        if error is None:
            _check_nested(name, kind, member, value)
            return
        errors.append(error)
    if errors:
        raise invalid(name, errors[0])


def _check_nested(name: str, kind: str, tp: Any, value: Any) -> None:
    """Recurse into an object's keys, a list's items or a map's values."""
    if kind == "object":
        check(tp, value, name)
    elif kind == "list":
        item_type = (typing.get_args(tp) or (Any,))[0]
        for i, item in enumerate([value] if isinstance(value, str) else value):
            _check_value(f"{name}[{i}]", item_type, item)
    elif kind == "map":
        value_type = (typing.get_args(tp) or (Any, Any))[-1]
        for key, item in value.items():
            _check_value(f"{name}[{key}]", value_type, item)


def check(typed_dict: type, data: dict, prefix: str = "") -> None:
    """Refuse ``data`` (decoded form parameters) where it breaks the declared ``typed_dict``.

    Unknown keys answer ``parameter_unknown``, values of the wrong shape or outside an enum
    ``parameter_invalid``, each naming the parameter in bracket notation as Stripe does.
    """
    declared = fields(typed_dict)
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in declared:
            raise unknown_param(name)
        _check_value(name, declared[key], value)


def _coerce_value(tp: Any, value: Any) -> Any:
    """``value`` (checked by :func:`check`) as the Python value its declared type means."""
    if value == "":
        return value
    for member in _members(tp):
        kind = _kind(member)
        if kind == "enum" or _shape_error("", kind, value) is not None:
            continue
        if kind == "bool":
            return value in ("true", "True", "1")
        if kind in ("int", "float"):
            return int(value) if kind == "int" else float(value)
        if kind == "object":
            return coerce(member, value)
        if kind == "list":
            item_type = (typing.get_args(member) or (Any,))[0]
            return [_coerce_value(item_type, x) for x in ([value] if isinstance(value, str) else value)]
        return value
    return value


def coerce(typed_dict: type, data: dict) -> dict:
    """Checked form parameters as typed values: booleans, numbers, lists and nested objects."""
    declared = fields(typed_dict)
    return {key: _coerce_value(declared.get(key, Any), value) for key, value in data.items()}


@functools.cache
def api_versions() -> tuple[str, ...]:
    """Every API version the library knows of (the ``api_version`` enum of a webhook endpoint)."""
    return tuple(literals(fields(operation("POST", "/v1/webhook_endpoints"))["api_version"]) or ())


def check_request(method: str, rule: str, data: dict) -> None:
    """Validate a request to a served route against its declaration; routes without one pass."""
    typed_dict = operation(method, rule)
    if typed_dict is not None:
        check(typed_dict, data)


__all__ = ["StripeError", "check", "coerce", "check_request", "literals", "operation", "operations", "template"]
