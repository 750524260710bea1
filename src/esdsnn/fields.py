"""How every configurable component declares a setting: a dataclass field with its help text.

The help becomes the command-line flag's help (:mod:`esdsnn.config` walks the fields), so each
setting is declared once, where its component lives."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with default ``default`` and ``help`` (plus any other ``metadata``)."""
    return field(default=default, metadata={"help": help, **metadata})


__all__ = ["option"]
