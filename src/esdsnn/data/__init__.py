"""Data sets by name: ``load_dataset("digits", batch_size=64, seed=60) -> DataBundle``.

Each entry maps a name to ``"module:function"``; the module is imported only when the data set is
used, so optional heavy imports stay out of ``import esdsnn``. Every loader takes one
:class:`~esdsnn.data.base.DataRequest` (it reads what applies to it) and returns a
:class:`~esdsnn.data.base.DataBundle`. Adding a data set is one line here.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from esdsnn.data.base import BatchSource, DataBundle, DataRequest, TensorBatches
from esdsnn.errors import ConfigError

_LOADERS: dict[str, str] = {
    "digits": "esdsnn.data.digits:load",
    "npz": "esdsnn.data.arrays:load",
    "cifar10": "esdsnn.data.cifar:load_cifar10",
    "cifar100": "esdsnn.data.cifar:load_cifar100",
    "cifar10-dvs": "esdsnn.data.dvs:load",
    "imagenet": "esdsnn.data.imagenet:load",
}

DEFAULT_DATASET = "digits"
Loader = Callable[[DataRequest], DataBundle]


def register_dataset(name: str, target: str) -> None:
    """Register a loader ``fn(request: DataRequest) -> DataBundle`` as ``"package.module:function"``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    _LOADERS[name] = target


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return list(_LOADERS)


def dataset_loader(name: str) -> Loader:
    """The loader function registered as ``name`` (imported on first use)."""
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(_LOADERS)}")
    module_name, func_name = _LOADERS[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def load_dataset(name: str = DEFAULT_DATASET, **request: Any) -> DataBundle:
    """Load data set ``name``; ``request`` holds the fields of :class:`DataRequest`
    (``data_path``, ``batch_size``, ``seed``, ``device``, ``T``, ``eval_batch_size``, ``workers``,
    ``augment``). ``seed`` fixes the order (and augmentation) of the training batches; the
    train/test split of each data set is fixed by the data set itself."""
    known = [f.name for f in dataclasses.fields(DataRequest)]
    unknown = sorted(k for k in request if k not in known)
    if unknown:
        raise ConfigError(f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if "device" in request:
        import torch

        request["device"] = torch.device(request["device"])
    return dataset_loader(name)(DataRequest(**request))


__all__ = [
    "BatchSource", "DataBundle", "DataRequest", "TensorBatches", "dataset_loader", "list_datasets",
    "load_dataset", "register_dataset",
]
