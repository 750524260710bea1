"""How every configurable component declares a setting: a dataclass field with its help text.

The help becomes the command-line flag's help (:mod:`esdsnn.config` walks the fields), so each
setting is declared once, where its component lives; a ``Literal`` field's type is its list of
choices, both for the flag and for :func:`check_choices`; :func:`coerce_value` turns a YAML value or
a flag's string into the field's type."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from esdsnn.errors import ConfigError


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with default ``default`` and ``help`` (plus any other ``metadata``)."""
    return field(default=default, metadata={"help": help, **metadata})


def _optional_inner(hint: Any) -> Optional[Any]:
    """``X`` of ``Optional[X]``, else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def choices(hint: Any) -> Optional[tuple[Any, ...]]:
    """The allowed values of a ``Literal`` field (also ``Optional[Literal[...]]``: None means
    "the default chosen later"), else None."""
    hint = _optional_inner(hint) or hint
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


@functools.cache
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, options, _optional_inner(hints[f.name]) is not None)
        for f in dataclasses.fields(cls)
        if (options := choices(hints[f.name])) is not None
    )


def check_choices(instance: Any) -> None:
    """Refuse a value outside its ``Literal`` choices (settings built from Python, not flags)."""
    cls: type = type(instance)
    for name, options, optional in _literal_fields(cls):
        value = getattr(instance, name)
        if value is None and optional:
            continue
        if value not in options:
            raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")


# ---- value coercion (YAML values and command-line strings) ------------------------------------
_NONE_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def coerce_value(name: str, value: Any, hint: Any, source: str) -> Any:
    """Turn ``value`` (from YAML or a flag string) into the type of field ``name``."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    optional = origin is Union and type(None) in args
    inner = [a for a in args if a is not type(None)] if origin is Union else [hint]
    where = f"{name} (in {source})"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} must not be empty")
    options = choices(hint)
    if options is not None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in options:
            value = str(value)  # precision: 32 (a YAML number) is the choice "32"
        if value not in options:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
        return value
    if optional and str in inner and len(inner) == 1:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if optional and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None
    if typing.get_origin(inner[0]) is tuple:  # names: "a,b" or a YAML list
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip()) or None
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value) or None
        raise ConfigError(f"{where} must be comma-separated names or a list of names, got {value!r}")
    if set(inner) == {str, float}:  # loss_scale: 'auto' or a number
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return _to_float(value, where, "'auto' or a number")
    kind = inner[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if kind is float:
        return _to_float(value, where, "a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"no coercion for field {name} of type {hint}")  # pragma: no cover


def _to_float(value: Any, where: str, expected: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())  # also '1e-3', which YAML 1.1 leaves a string
        except ValueError:
            raise ConfigError(f"{where} must be {expected}, got {value!r}") from None
    else:
        raise ConfigError(f"{where} must be {expected}, got {value!r}")
    if not math.isfinite(result):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    return result


__all__ = ["check_choices", "choices", "coerce_value", "option"]
