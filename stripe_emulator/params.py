"""Typed access to decoded request parameters, with Stripe's validation errors.

Stripe rejects unknown parameters and names the offending one in
``error.param``; handlers read what they understand through ``Params`` and
call ``done()`` so anything left over answers ``parameter_unknown`` just like
Stripe. That catches typos in the app before they reach production.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any, Literal, overload

from .errors import StripeError, invalid, missing_param, unknown_param


class Params:
    """Reads one request's (or one nested object's) parameters with Stripe's validation.

    The readers are named after the type they return. With ``required=True`` a reader
    either returns a value or raises the Stripe error, so the overloads tell the type
    checker that no ``None`` comes back in that case.
    """

    def __init__(self, data: builtins.dict, prefix: builtins.str = ""):
        self.data = data
        self.prefix = prefix
        self.used: set[str] = {"expand"}

    def _name(self, key: builtins.str) -> builtins.str:
        return f"{self.prefix}[{key}]" if self.prefix else key

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.data

    def raw(self, key: builtins.str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    @overload
    def str(
        self,
        key: builtins.str,
        required: Literal[True],
        choices: Iterable[builtins.str] | None = None,
        empty_ok: builtins.bool = False,
    ) -> builtins.str: ...
    @overload
    def str(
        self,
        key: builtins.str,
        required: builtins.bool = False,
        choices: Iterable[builtins.str] | None = None,
        empty_ok: builtins.bool = False,
    ) -> builtins.str | None: ...

    def str(
        self,
        key: builtins.str,
        required: builtins.bool = False,
        choices: Iterable[builtins.str] | None = None,
        empty_ok: builtins.bool = False,
    ) -> builtins.str | None:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise missing_param(self._name(key))
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise invalid(self._name(key), f"Invalid string: {value!r}")
        if value == "" and not empty_ok:
            if required:
                raise invalid(
                    self._name(key),
                    f"You passed an empty string for '{self._name(key)}'. "
                    "We assume empty values are an attempt to unset a parameter; however "
                    f"'{self._name(key)}' cannot be unset. You should remove '{self._name(key)}' "
                    "from your request or supply a non-empty value.",
                )
            return None
        if choices is not None and value not in choices:
            raise invalid(self._name(key), f"Invalid {self._name(key)}: must be one of " + ", ".join(choices))
        return value

    @overload
    def int(
        self,
        key: builtins.str,
        required: Literal[True],
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int: ...
    @overload
    def int(
        self,
        key: builtins.str,
        required: builtins.bool = False,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int | None: ...

    def int(
        self,
        key: builtins.str,
        required: builtins.bool = False,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int | None:
        value = self.str(key, required=required)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise invalid(self._name(key), f"Invalid integer: {value}") from None
        if minimum is not None and number < minimum:
            raise invalid(self._name(key), f"Invalid {self._name(key)}: must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise invalid(self._name(key), f"Invalid {self._name(key)}: must be at most {maximum}")
        return number

    @overload
    def bool(self, key: builtins.str, required: Literal[True]) -> builtins.bool: ...
    @overload
    def bool(self, key: builtins.str, required: builtins.bool = False) -> builtins.bool | None: ...

    def bool(self, key: builtins.str, required: builtins.bool = False) -> builtins.bool | None:
        value = self.str(key, required=required)
        if value is None:
            return None
        if value in ("true", "True", "1"):
            return True
        if value in ("false", "False", "0"):
            return False
        raise invalid(self._name(key), f"Invalid boolean: {value}")

    @overload
    def dict(self, key: builtins.str, required: Literal[True]) -> Params: ...
    @overload
    def dict(self, key: builtins.str, required: builtins.bool = False) -> Params | None: ...

    def dict(self, key: builtins.str, required: builtins.bool = False) -> Params | None:
        self.used.add(key)
        if key not in self.data or self.data[key] == "":
            if required:
                raise missing_param(self._name(key))
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            raise invalid(self._name(key), f"Invalid object for {self._name(key)}")
        return Params(value, self._name(key))

    @overload
    def list(self, key: builtins.str, required: Literal[True]) -> builtins.list: ...
    @overload
    def list(self, key: builtins.str, required: builtins.bool = False) -> builtins.list | None: ...

    def list(self, key: builtins.str, required: builtins.bool = False) -> builtins.list | None:
        self.used.add(key)
        if key not in self.data or self.data[key] == "":
            if required:
                raise missing_param(self._name(key))
            return None
        value = self.data[key]
        if isinstance(value, dict) and not value:
            value = []
        if not isinstance(value, list):
            if isinstance(value, str):
                return [value]
            raise invalid(self._name(key), f"Invalid array for {self._name(key)}")
        return value

    @overload
    def list_of_dicts(self, key: builtins.str, required: Literal[True]) -> builtins.list[Params]: ...
    @overload
    def list_of_dicts(self, key: builtins.str, required: builtins.bool = False) -> builtins.list[Params] | None: ...

    def list_of_dicts(self, key: builtins.str, required: builtins.bool = False) -> builtins.list[Params] | None:
        items = self.list(key, required=required)
        if items is None:
            return None
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise invalid(f"{self._name(key)}[{i}]", f"Invalid object for {self._name(key)}[{i}]")
            out.append(Params(item, f"{self._name(key)}[{i}]"))
        return out

    def metadata(self, key: builtins.str = "metadata") -> builtins.dict | None:
        """Metadata update semantics: ``""`` clears all, a key set to ``""`` removes it."""
        self.used.add(key)
        if key not in self.data:
            return None
        value = self.data[key]
        if value == "":
            return {}
        if not isinstance(value, dict) or any(not isinstance(v, str) for v in value.values()):
            raise invalid(self._name(key), "Invalid metadata: values must be strings")
        if len(value) > 50:
            raise invalid(self._name(key), "Invalid metadata: at most 50 keys")
        return value

    def ignore(self, *keys: builtins.str) -> None:
        self.used.update(keys)

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise unknown_param(self._name(key))


def merge_metadata(current: dict, update: dict | None) -> dict:
    if update is None:
        return current
    if update == {}:
        return {}
    merged = dict(current)
    for k, v in update.items():
        if v == "":
            merged.pop(k, None)
        else:
            merged[k] = v
    return merged


__all__ = ["Params", "StripeError", "merge_metadata"]
