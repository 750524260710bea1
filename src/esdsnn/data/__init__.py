"""Data sets by name: ``load_dataset("digits", batch_size=64, seed=60) -> DataBundle``.

Each entry maps a name to ``"module:function"``; the module is imported only when the data set is
used, so optional heavy imports stay out of ``import esdsnn``. A loader takes the keyword
arguments ``data_path, batch_size, seed, device, T`` (plus its own options) and returns a
:class:`~esdsnn.data.base.DataBundle`. Adding a data set is one line here.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional

import torch

from esdsnn.data.base import BatchSource, DataBundle, TensorBatches
from esdsnn.errors import ConfigError

_LOADERS: dict[str, str] = {
    "digits": "esdsnn.data.digits:load",
    "npz": "esdsnn.data.arrays:load",
    "cifar10": "esdsnn.data.cifar:load_cifar10",
    "cifar100": "esdsnn.data.cifar:load_cifar100",
    "cifar10-dvs": "esdsnn.data.dvs:load",
    "imagenet": "esdsnn.data.imagenet:load",
}
# Named by the specification, not wired up yet (none left; kept for future names).
_PLANNED: tuple[str, ...] = ()

DEFAULT_DATASET = "digits"


def register_dataset(name: str, target: str) -> None:
    """Register a loader as ``"package.module:function"`` under ``name``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    _LOADERS[name] = target


def list_datasets(*, include_planned: bool = False) -> list[str]:
    """Names :func:`load_dataset` accepts (with ``include_planned``: also those still to come)."""
    names = list(_LOADERS)
    if include_planned:
        names += [n for n in _PLANNED if n not in _LOADERS]
    return names


def dataset_loader(name: str) -> Callable[..., DataBundle]:
    """The loader function registered as ``name`` (imported on first use)."""
    if name not in _LOADERS:
        if name in _PLANNED:
            raise ConfigError(
                f"dataset {name} is not available yet; available: {', '.join(_LOADERS)}"
            )
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}")
    module_name, func_name = _LOADERS[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    data_path: Optional[str] = None,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    T: Optional[int] = None,
    **options: Any,
) -> DataBundle:
    """Load data set ``name`` with batches of ``batch_size`` on ``device``.

    ``seed`` fixes the order (and augmentation) of the training batches; the train/test split of
    each data set is fixed by the data set itself. ``T`` is the number of time steps (event data
    sets build that many frames per sample).
    """
    loader = dataset_loader(name)
    return loader(
        data_path=data_path, batch_size=batch_size, seed=seed, device=device, T=T, **options
    )


__all__ = [
    "BatchSource",
    "DataBundle",
    "TensorBatches",
    "dataset_loader",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
