"""Parsed YAML -> frozen dataclasses, strictly.

An unknown key, a value of the wrong type or a check in a dataclass's
`__post_init__` (which raises ValueError) becomes a `SchemaError` whose
message starts with the key path: `listeners[0].port: expected integer, got
'abc'`. Used for the broker's configuration and the simulators' scenarios.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

T = TypeVar("T")


class SchemaError(ValueError):
    """A value does not fit its dataclass; the message names the key path."""


_SCALARS: dict[type, Callable[[Any], bool]] = {
    bool: lambda value: isinstance(value, bool),
    int: lambda value: isinstance(value, int) and not isinstance(value, bool),
    float: lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    str: lambda value: isinstance(value, str),
}
_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def build(kind: type[T], value: Any, path: str = "") -> T:
    """Convert a parsed YAML value to `kind`, or raise SchemaError naming where it fails."""
    return typing.cast(T, _build(kind, value, path))


def _build(kind: Any, value: Any, path: str) -> Any:
    where = path or "top level"
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        errors = []
        for option in options:
            try:
                return _build(option, value, path)
            except SchemaError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            choices = ", ".join(repr(option) for option in allowed)
            raise SchemaError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {value!r}")
        return tuple(_build(item_kind, item, f"{path}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(kind):
        return _build_dataclass(kind, value, path)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        values = [member.value for member in kind]
        if value not in values:
            listed = ", ".join(repr(member) for member in values)
            raise SchemaError(f"{where}: expected one of {listed}, got {value!r}")
        return kind(value)
    accepts = _SCALARS.get(kind)
    if accepts is not None and accepts(value):
        return float(value) if kind is float else value
    name = _NAMES.get(kind, getattr(kind, "__name__", str(kind)))
    raise SchemaError(f"{where}: expected {name}, got {value!r}")


def _build_dataclass(kind: Any, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(f"{path or 'top level'}: expected a mapping, got {value!r}")
    hints = typing.get_type_hints(kind)
    known = [f.name for f in dataclasses.fields(kind) if f.init]
    arguments = {}
    for key, item in value.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SchemaError(f"{key_path}: unknown key{hint}")
        arguments[key] = _build(hints[key], item, key_path)
    for field in dataclasses.fields(kind):
        required = field.default is dataclasses.MISSING and \
            field.default_factory is dataclasses.MISSING
        if field.init and required and field.name not in arguments:
            raise SchemaError(f"{path}.{field.name}: missing, and required" if path
                              else f"{field.name}: missing, and required")
    try:
        return kind(**arguments)
    except SchemaError:
        raise
    except ValueError as exc:  # a __post_init__ check, which names its key
        raise SchemaError(f"{path}.{exc}" if path else str(exc)) from None
