"""Models by name (``create_model("resnet18", num_classes=10)``)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Optional

from torch import nn

from ..errors import ConfigError, brief
from ..neurons.lif import LIFConfig

ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


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


def create_model(
    arch: str, num_classes: int = 10, in_channels: int = 3, *, neuron: Optional[LIFConfig] = None, **neuron_options
) -> nn.Module:
    """Build a registered spiking model, or a user's own from ``arch = "package.module:factory"``
    (called as ``factory(num_classes=, in_channels=, **LIF options)``).

    ``neuron`` (a :class:`LIFConfig`) or its fields as keywords (``decay``, ``threshold``,
    ``reset``, ``v_reset``, ``detach_reset``, ``learnable_decay``, ``surrogate_alpha``) configure
    every LIF layer.
    """
    if arch not in _MODELS and ":" not in arch:
        raise ConfigError(
            f"unknown arch {arch!r}: choose one of {', '.join(list_models())}, or name your own "
            f"factory as package.module:function"
        )
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    try:
        neuron = dataclasses.replace(neuron or LIFConfig(), **neuron_options)
    except TypeError as err:
        known = ", ".join(f.name for f in dataclasses.fields(LIFConfig))
        raise ConfigError(f"bad neuron option ({err}); known options: {known}") from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if arch in _MODELS:
        return _MODELS[arch](num_classes=num_classes, in_channels=in_channels, neuron=neuron)
    factory = model_factory(arch)
    try:
        model = factory(num_classes=num_classes, in_channels=in_channels, **dataclasses.asdict(neuron))
    except Exception as exc:  # the user's code: any failure is named in one line
        raise ConfigError(
            f"model factory {arch} failed: {brief(exc, 300, with_type=True)} (it is called as "
            f"{arch.split(':')[1]}(num_classes=, in_channels=, **LIF options))"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {arch} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def model_factory(spec: str) -> Callable[..., nn.Module]:
    """The function named by ``"package.module:function"`` (a user's own model), imported now;
    a module that cannot be imported or a missing function is a :class:`ConfigError`."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ConfigError(f"a model factory is named as package.module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name} for --arch {spec} ({brief(exc, 200, with_type=True)}); "
            f"put the folder holding it on PYTHONPATH"
        ) from None
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name} has no function {func_name} (for --arch {spec})")
    return factory
