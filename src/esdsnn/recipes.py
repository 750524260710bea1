"""The paper's recipes (SPEC §7), one place for each number: per data set, the settings its runs
share. The ready configs (``configs/*.yaml``) spell them out per run and are tested to agree; a run
with ``--dataset X`` and no config takes X's recipe for every setting it does not set
(:mod:`esdsnn.config`); loaders take their defaults (T, batch) from here; help texts print them.

A setting that differs between the runs of a data set (CIFAR's T of 6, 4 or 2; the architecture)
is left at the general default where that is one of the recipe's values (T = 4, ResNet-18).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

_CIFAR: dict[str, Any] = {
    "arch": "resnet18",
    "epochs": 300,
    "batch_size": 128,
    "lr": 0.1,
    "lr_schedule": "epoch",
    "val_fraction": 0.0,
}

RECIPES: dict[str, Mapping[str, Any]] = {
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "cifar10-dvs": {
        "arch": "resnet18",
        "T": 10,
        "epochs": 300,
        "batch_size": 32,
        "lr": 0.1,
        "lr_schedule": "epoch",
        "val_fraction": 0.0,
        "beta": 0.1,
    },
    "imagenet": {
        "arch": "preact_resnet34",
        "T": 4,
        "epochs": 100,
        "batch_size": 512,
        "lr": 0.2,
        "lr_schedule": "epoch",
        "weight_decay": 2e-5,
        "alpha": 0.7,
        "val_fraction": 0.0,
    },
}

#: The recipe of a data set registered with ``recipe=True`` and none of its own: CIFAR's.
DEFAULT_RECIPE: Mapping[str, Any] = _CIFAR

#: How the recipes are named in messages.
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar10-dvs": "CIFAR10-DVS", "imagenet": "ImageNet"}


def recipe(dataset: str) -> Mapping[str, Any]:
    """The settings of ``dataset``'s recipe (a registered data set with ``recipe=True`` and no
    entry here gets CIFAR's)."""
    return RECIPES.get(dataset, DEFAULT_RECIPE)


#: The ready configs, one YAML file per run of the paper (installed with the package).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_PAPER = re.compile(r"^#\s*Paper:\s*([0-9.]+)\s*%", re.MULTILINE)


@dataclass(frozen=True)
class RecipeFile:
    """One ready config: its name (the file name without ``.yaml``), path, settings and the
    top-1 accuracy the paper reports for it (SPEC §8; from the file's header)."""

    name: str
    path: Path
    settings: Mapping[str, Any]
    paper_top1: Optional[float]


def recipe_files() -> list[RecipeFile]:
    """Every ready config, by name."""
    import yaml

    files = []
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        found = _PAPER.search(text)
        files.append(RecipeFile(path.stem, path, yaml.safe_load(text) or {}, float(found.group(1)) if found else None))
    return files


def find_recipe_file(name: str) -> Optional[Path]:
    """The ready config called ``name`` (with or without ``.yaml``), else None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = CONFIG_DIR / f"{stem}.yaml"
    return path if "/" not in stem and path.is_file() else None


__all__ = [
    "CONFIG_DIR",
    "DEFAULT_RECIPE",
    "RECIPES",
    "TITLES",
    "RecipeFile",
    "find_recipe_file",
    "recipe",
    "recipe_files",
]
