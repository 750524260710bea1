"""Training methods by name: ``create_method("esd", model, T=6)``.

Every module of this package registers its methods when imported (:mod:`.registry`); all are
imported here, so a new method is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import MethodOutput, TrainingMethod
from .registry import SECTIONS, MethodSpec, create_method, list_methods, method_spec, register_method

# the built-in methods first (their order is the one listed), then any other module here
_FIRST = ("bptt", "ratebp", "esd", "ann", "kd")
for _name in [*_FIRST, *sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _FIRST)]:
    if _name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_name}")

from .ann import ANN  # noqa: E402
from .bptt import BPTT  # noqa: E402
from .kd import ANNDistillation  # noqa: E402
from .ratebp import RateBP  # noqa: E402

__all__ = [
    "ANN",
    "BPTT",
    "SECTIONS",
    "ANNDistillation",
    "MethodOutput",
    "MethodSpec",
    "RateBP",
    "TrainingMethod",
    "create_method",
    "list_methods",
    "method_spec",
    "register_method",
]
