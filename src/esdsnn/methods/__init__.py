"""Training methods by name: ``create_method("esd", model, T=6)``."""
from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from ..distill.esd_loss import DistillConfig
from ..errors import ConfigError
from .ann import ANN
from .base import MethodOutput, TrainingMethod
from .bptt import BPTT
from .kd import ANNDistillation, KDConfig
from .ratebp import RateBP

_DISTILL_KEYS = set(DistillConfig.__dataclass_fields__)
_KD_KEYS = set(KDConfig.__dataclass_fields__)


def _kd(model: nn.Module, T: int, loss_scale="auto", teacher: nn.Module | None = None, **kwargs) -> TrainingMethod:
    unknown = sorted(set(kwargs) - _DISTILL_KEYS - _KD_KEYS)
    if unknown:
        raise ConfigError(f"unknown kd option(s) {unknown}; known: teacher, loss_scale, {', '.join(sorted(_KD_KEYS))}")
    if teacher is None:
        raise ConfigError("method kd needs a teacher: train one with --method ann, then pass --teacher-run RUN_DIR")
    try:
        kd = KDConfig(**{k: v for k, v in kwargs.items() if k in _KD_KEYS})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return ANNDistillation(model, T, teacher=teacher, kd=kd, loss_scale=loss_scale)


def _plain(cls: type) -> Callable[..., TrainingMethod]:
    def build(model: nn.Module, T: int, loss_scale="auto", **kwargs) -> TrainingMethod:
        # distillation options are accepted (one shared config) and have no effect without branches
        unknown = sorted(set(kwargs) - _DISTILL_KEYS - _KD_KEYS)
        if unknown:
            raise ConfigError(f"unknown method option(s) {unknown}; known: loss_scale, {', '.join(sorted(_DISTILL_KEYS))}")
        return cls(model, T, loss_scale=loss_scale)

    return build


def _distilled(cls: type, teacher: str | None) -> Callable[..., TrainingMethod]:
    def build(model: nn.Module, T: int, loss_scale="auto", **kwargs) -> TrainingMethod:
        unknown = sorted(set(kwargs) - _DISTILL_KEYS - _KD_KEYS)
        if unknown:
            raise ConfigError(f"unknown method option(s) {unknown}; known: loss_scale, {', '.join(sorted(_DISTILL_KEYS))}")
        kwargs = {k: v for k, v in kwargs.items() if k in _DISTILL_KEYS}
        if teacher is not None:
            kwargs["teacher"] = teacher
        try:
            distill = DistillConfig(**kwargs)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return cls(model, T, loss_scale=loss_scale, distill=distill)

    return build


_METHODS: Dict[str, Callable[..., TrainingMethod]] = {
    "bptt": _plain(BPTT),
    "ratebp": _plain(RateBP),
    "esd": _distilled(RateBP, None),  # teacher from config, default "reliable"
    "esd-bptt": _distilled(BPTT, None),
    "sd": _distilled(RateBP, "all"),  # plain self-distillation: the ablation of the reliability filter
    "ann": _plain(ANN),  # the ReLU twin: a teacher for kd
    "kd": _kd,
}

DESCRIPTIONS = {
    "bptt": "BPTT with surrogate gradients (baseline)",
    "ratebp": "rate-based backpropagation (baseline)",
    "esd": "RateBP + ESD branches, reliability-decoupled teacher",
    "esd-bptt": "BPTT + ESD branches, reliability-decoupled teacher",
    "sd": "RateBP + branches, plain self-distillation (teacher = all heads)",
    "ann": "the ReLU twin of the architecture (ANN teacher for kd)",
    "kd": "SNN student distilled from a trained ANN teacher (SAMD + NLD)",
}


def list_methods() -> list[str]:
    return list(_METHODS)


def create_method(name: str, model: nn.Module, T: int, **kwargs) -> TrainingMethod:
    """Wrap ``model`` in the training method ``name`` (an ``nn.Module`` holding any branches).

    Options: ``loss_scale`` (``"auto"`` or a number) and, for the distilling methods, the fields of
    :class:`~esdsnn.distill.DistillConfig` (``alpha``, ``beta``, ``tau``, ``teacher``,
    ``teacher_space``, ``unreliable``, ``eta``); for ``kd`` a trained ANN ``teacher`` module and
    the fields of :class:`KDConfig`. ``ann`` turns ``model`` into its ReLU twin in place.
    """
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(_METHODS)}")
    return _METHODS[name](model, T, **kwargs)


__all__ = ["ANN", "ANNDistillation", "BPTT", "DESCRIPTIONS", "KDConfig", "MethodOutput", "RateBP", "TrainingMethod", "create_method", "list_methods"]
