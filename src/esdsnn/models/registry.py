"""Models by name (``create_model("resnet18", num_classes=10)``)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

from torch import nn

from ..errors import ConfigError
from ..neurons.lif import LIFConfig

ModelBuilder = Callable[..., nn.Module]
_MODELS: Dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make a builder ``fn(num_classes, in_channels, neuron: LIFConfig)`` available by name."""

    def add(fn: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        return fn

    return add


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(arch: str, num_classes: int = 10, in_channels: int = 3, *, neuron: Optional[LIFConfig] = None,
                 **neuron_options) -> nn.Module:
    """Build a registered spiking model.

    ``neuron`` (a :class:`LIFConfig`) or its fields as keywords (``decay``, ``threshold``,
    ``reset``, ``v_reset``, ``detach_reset``, ``learnable_decay``, ``surrogate_alpha``) configure
    every LIF layer.
    """
    if arch not in _MODELS:
        raise ConfigError(f"unknown arch {arch!r}: choose one of {', '.join(list_models())}")
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    try:
        neuron = dataclasses.replace(neuron or LIFConfig(), **neuron_options)
    except TypeError as err:
        known = ", ".join(f.name for f in dataclasses.fields(LIFConfig))
        raise ConfigError(f"bad neuron option ({err}); known options: {known}") from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return _MODELS[arch](num_classes=num_classes, in_channels=in_channels, neuron=neuron)
