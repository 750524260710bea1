"""The paper's recipes (SPEC §7), one place for each number: per data set, the settings its runs
share. The ready configs (``configs/*.yaml``) spell them out per run and are tested to agree; a run
with ``--dataset X`` and no config takes X's recipe for every setting it does not set
(:mod:`esdsnn.config`); loaders take their defaults (T, batch) from here; help texts print them.

A setting that differs between the runs of a data set (CIFAR's T of 6, 4 or 2; the architecture)
is left at the general default where that is one of the recipe's values (T = 4, ResNet-18).
"""
from __future__ import annotations

from typing import Any, Mapping

_CIFAR: dict[str, Any] = {"arch": "resnet18", "epochs": 300, "batch_size": 128, "lr": 0.1, "val_fraction": 0.0}

RECIPES: dict[str, Mapping[str, Any]] = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "cifar10-dvs": {"arch": "resnet18", "T": 10, "epochs": 300, "batch_size": 32, "lr": 0.1, "val_fraction": 0.0,
                    "beta": 0.1},
    "imagenet": {"arch": "preact_resnet34", "T": 4, "epochs": 100, "batch_size": 512, "lr": 0.2,
                 "weight_decay": 2e-5, "alpha": 0.7, "val_fraction": 0.0},
}

#: The recipe of a data set registered with ``recipe=True`` and none of its own: CIFAR's.
DEFAULT_RECIPE: Mapping[str, Any] = _CIFAR

#: How the recipes are named in messages.
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar10-dvs": "CIFAR10-DVS", "imagenet": "ImageNet"}


def recipe(dataset: str) -> Mapping[str, Any]:
    """The settings of ``dataset``'s recipe (a registered data set with ``recipe=True`` and no
    entry here gets CIFAR's)."""
    return RECIPES.get(dataset, DEFAULT_RECIPE)


__all__ = ["DEFAULT_RECIPE", "RECIPES", "TITLES", "recipe"]
