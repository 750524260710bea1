"""How every configurable component declares a setting: a dataclass field with its help text.

The help becomes the command-line flag's help (:mod:`esdsnn.config` walks the fields), so each
setting is declared once, where its component lives; a ``Literal`` field's type is its list of
choices, both for the flag and for :func:`check_choices`."""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import field
from typing import Any, Literal, Optional, Union


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


@functools.lru_cache(maxsize=None)
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, options, _optional_inner(hints[f.name]) is not None) for f in dataclasses.fields(cls)
                 if (options := choices(hints[f.name])) is not None)


def check_choices(instance: Any) -> None:
    """Refuse a value outside its ``Literal`` choices (settings built from Python, not flags)."""
    for name, options, optional in _literal_fields(type(instance)):
        value = getattr(instance, name)
        if value is None and optional:
            continue
        if value not in options:
            raise ValueError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")


__all__ = ["check_choices", "choices", "option"]
