"""Data sets by name: ``load_dataset("digits", batch_size=64, seed=60) -> DataBundle``.

Each entry maps a name to ``"module:function"`` and a few facts (:class:`DatasetInfo`): whether
the paper has a recipe for it, and which augmentation switches apply to it. The module is
imported only when the data set is used, so optional heavy imports stay out of ``import esdsnn``.
Every loader takes one :class:`~esdsnn.data.base.DataRequest` (it reads what applies to it) and
returns a :class:`~esdsnn.data.base.DataBundle`. Adding a data set is one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from esdsnn.data.base import BatchSource, DataBundle, DataOptions, DataRequest, TensorBatches
from esdsnn.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set: its loader and the facts the config needs before loading it.

    ``recipe``: the paper trains it with a fixed recipe (the CIFAR/ImageNet settings of SPEC §7,
    the best epoch selected on the test set as the paper does); without one, the defaults are
    sized to the data and a validation split selects the best epoch; the recipes' numbers are in
    :mod:`esdsnn.recipes`. ``augmentations``: the :class:`~esdsnn.data.augment.AugmentConfig`
    fields that apply, with ``augment_defaults`` for its switches; ``options``: the
    :class:`~esdsnn.data.base.DataOptions` fields that apply."""

    target: str
    recipe: bool = False
    augmentations: tuple[str, ...] = ()
    augment_defaults: Mapping[str, bool] = field(default_factory=dict)
    options: tuple[str, ...] = ()


_CIFAR_AUGMENTATIONS = ("crop", "flip", "autoaugment", "cutout", "crop_padding", "cutout_size")
_CIFAR_DEFAULTS = {"crop": True, "flip": True, "autoaugment": True, "cutout": True}
_DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("esdsnn.data.digits:load"),
    "npz": DatasetInfo(
        "esdsnn.data.arrays:load",
        augmentations=("crop", "flip", "crop_padding"),
        augment_defaults={"crop": False, "flip": False},
    ),
    "cifar10": DatasetInfo(
        "esdsnn.data.cifar:load_cifar10",
        recipe=True,
        augmentations=_CIFAR_AUGMENTATIONS,
        augment_defaults=_CIFAR_DEFAULTS,
    ),
    "cifar100": DatasetInfo(
        "esdsnn.data.cifar:load_cifar100",
        recipe=True,
        augmentations=_CIFAR_AUGMENTATIONS,
        augment_defaults=_CIFAR_DEFAULTS,
    ),
    "cifar10-dvs": DatasetInfo("esdsnn.data.dvs:load", recipe=True, options=("dvs_split",)),
    "imagenet": DatasetInfo("esdsnn.data.imagenet:load", recipe=True),
}

DEFAULT_DATASET = "digits"
Loader = Callable[[DataRequest], DataBundle]


def register_dataset(
    name: str,
    target: str,
    *,
    recipe: bool = False,
    augmentations: tuple[str, ...] = (),
    augment_defaults: Mapping[str, bool] | None = None,
    options: tuple[str, ...] = (),
) -> None:
    """Register a loader ``fn(request: DataRequest) -> DataBundle`` as ``"package.module:function"``
    (see :class:`DatasetInfo` for the keywords; a data set without a recipe gets defaults sized to
    its data and a validation split)."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    _DATASETS[name] = DatasetInfo(target, recipe, tuple(augmentations), dict(augment_defaults or {}), tuple(options))


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return list(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """What is registered as ``name``."""
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(_DATASETS)}")
    return _DATASETS[name]


def dataset_loader(name: str) -> Loader:
    """The loader function registered as ``name`` (imported on first use)."""
    module_name, func_name = dataset_info(name).target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def load_dataset(name: str = DEFAULT_DATASET, **request: Any) -> DataBundle:
    """Load data set ``name``; ``request`` holds the fields of :class:`DataRequest`
    (``data_path``, ``batch_size``, ``seed``, ``device``, ``T``, ``eval_batch_size``, ``workers``,
    ``augment``, ``options``). ``seed`` fixes the order (and augmentation) of the training batches; the
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
    "BatchSource",
    "DataBundle",
    "DataOptions",
    "DataRequest",
    "DatasetInfo",
    "TensorBatches",
    "dataset_info",
    "dataset_loader",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
