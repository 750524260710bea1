"""Defaults of the settings that depend on the data set, with the reason for each.

Three kinds of data set (:class:`esdsnn.data.DatasetInfo`):

- **a paper recipe** (CIFAR-10/100, CIFAR10-DVS, ImageNet): that data set's recipe of SPEC §7
  (:data:`esdsnn.recipes.RECIPES`: e.g. CIFAR ResNet-18, 300 epochs, batch 128, lr 0.1, a cosine
  stepped per epoch; CIFAR10-DVS batch 32, T = 10, β = 0.1) and the best epoch selected on the
  test set, as the paper does (``val_fraction`` 0). Its other settings (T, β, ...) are the base of
  a config that names the data set (:meth:`esdsnn.config.TrainConfig.from_dict`);
- **the bundled digits**: a short run tuned to finish well within 3 minutes on 2 CPU cores;
- **anything else** (``npz``, a registered loader): sized to the data once it is read
  (:func:`sized_defaults`): the model from the input size, the batch from the number of
  training samples, a short budget of :data:`SIZED_EPOCHS` epochs, the free CPU cores,
  ``val_fraction`` 0.1 (the best epoch is selected on held-out training data), and an optimiser
  set to reach its accuracy within a few epochs: a cosine that moves every step (so that even a
  2-epoch run anneals to 0) and a step of :data:`SIZED_STEP` on the unscaled loss (lr 0.4 for
  the RateBP methods at T = 4, whose loss is scaled by 1/T; 0.1 for BPTT). Chosen by racing
  SpikingJelly's tutorial CSNN for 2 epochs on three sets (docs/own-data.md).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from esdsnn.data import dataset_info, list_datasets
from esdsnn.recipes import DEFAULT_RECIPE, RECIPES, TITLES, recipe

#: Settings the data set decides when they are left unset.
DATA_DEPENDENT = ("arch", "epochs", "batch_size", "lr", "lr_schedule", "threads", "val_fraction")
SIZED_EPOCHS = 20
SIZED_VAL_FRACTION = 0.1
SIZED_BATCH = 64  # and about a tenth of the training samples below FEW_SAMPLES of them
FEW_SAMPLES = 640
SMALL_SIDE, COMPACT_SIDE = 16, 64  # input sides up to which digits_resnet / small_resnet are chosen
#: SGD's learning rate on the unscaled loss for data without a recipe: lr = SIZED_STEP / loss scale.
SIZED_STEP = 0.1

#: The CIFAR recipe's data-dependent settings (a registered data set with ``recipe=True`` and no
#: recipe of its own gets these).
RECIPE_DEFAULTS: dict[str, Any] = {
    **{k: DEFAULT_RECIPE[k] for k in DATA_DEPENDENT if k in DEFAULT_RECIPE},
    "threads": None,
}
# digits: tuned so that the default ESD run reaches >= 96% test accuracy (spike pass) in well
# under 3 minutes on 2 CPU cores. One thread: the model is small, and two threads slow down many
# times over as soon as the other core is busy (measured: 0.3-0.8 s vs 6-7 s per step on a
# loaded 2-core machine).
DIGITS_DEFAULTS: dict[str, Any] = {
    "arch": "digits_resnet",
    "epochs": 10,
    "batch_size": 64,
    "lr": 0.1,
    "lr_schedule": "epoch",
    "threads": 1,
    "val_fraction": SIZED_VAL_FRACTION,
}


class Choice(NamedTuple):
    """A default value and why it was chosen (printed before training)."""

    value: Any
    reason: str


@dataclass(frozen=True)
class DataFacts:
    """What sizing the defaults needs to know about the data, once it is read."""

    input_shape: tuple[int, ...]  # (C, H, W) of one frame
    num_classes: int
    num_train: Optional[int]
    time_steps: Optional[int] = None

    @classmethod
    def of(cls, bundle: Any) -> DataFacts:
        return cls(tuple(bundle.input_shape), bundle.num_classes, bundle.num_train, bundle.time_steps)


def busy_cores(interval: float = 0.3) -> Optional[float]:
    """How many cores other work keeps busy now: the non-idle share of ``/proc/stat`` over
    ``interval`` seconds (Linux), times the core count; None where it cannot be read."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def free_cores_choice() -> Choice:
    """CPU threads for a small model: the cores that are free when the run starts, at least 1.
    Two threads on two idle cores train a small model about 1.5× faster than one, but many times
    slower once another job takes a core, so a session that sees its steps slow down drops to one
    thread (:class:`esdsnn.train.progress.ThreadGuard`). Decided once per process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:  # pragma: no cover - not Linux
        return Choice(1, "one thread is fastest for small models on a shared CPU")
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return Choice(free, f"{free} of {cores} core(s) free at the start ({busy:.1f} busy); back to 1 if steps slow down")


def fixed_defaults(dataset: str, loss_scale: float = 1.0) -> dict[str, Choice]:
    """The defaults known before the data is read (all of them for recipes and digits);
    ``loss_scale``: what the method's ``loss_scale: auto`` is (1/T for RateBP-based methods)."""
    if dataset == "digits":
        return {k: Choice(v, "the bundled digits' tuned default") for k, v in DIGITS_DEFAULTS.items()}
    if dataset_info(dataset).recipe:
        title = TITLES.get(dataset, "CIFAR") if dataset in RECIPES else "CIFAR"
        reasons = {"val_fraction": "the paper's recipe selects on the test set"}
        return {
            k: Choice(v, reasons.get(k, f"the paper's {title} recipe (SPEC §7)"))
            for k, v in recipe_defaults(dataset).items()
        }
    lr = SIZED_STEP / loss_scale
    lr_reason = (
        "SGD with BatchNorm"
        if loss_scale == 1
        else (f"SGD with BatchNorm, {SIZED_STEP:g} on the loss before this method's scale of {loss_scale:g}")
    )
    return {
        "epochs": Choice(SIZED_EPOCHS, "a short budget for data without a recipe; raise --epochs for more"),
        "lr": Choice(float(f"{lr:.6g}"), lr_reason),
        "lr_schedule": Choice("step", "a cosine per step: a run of a few epochs still anneals to 0"),
        "threads": free_cores_choice(),
        "val_fraction": Choice(
            SIZED_VAL_FRACTION, "data without a recipe: the best epoch is selected on held-out data"
        ),
    }


def sized_defaults(dataset: str, facts: DataFacts, loss_scale: float = 1.0) -> dict[str, Choice]:
    """All defaults for ``dataset`` with data ``facts`` (a recipe or digits ignores the facts)."""
    chosen = fixed_defaults(dataset, loss_scale)
    if dataset == "digits" or dataset_info(dataset).recipe:
        return chosen
    _c, h, w = facts.input_shape[-3:]
    side = max(h, w)
    if side <= SMALL_SIDE:
        arch = Choice("digits_resnet", f"{h}×{w} inputs (≤ {SMALL_SIDE} px): a small ResNet at full resolution")
    elif side <= COMPACT_SIDE:
        arch = Choice(
            "small_resnet",
            f"{h}×{w} inputs ({SMALL_SIDE + 1}–{COMPACT_SIDE} px): a stride-2 stem (stages "
            f"at {_half(h)}×{_half(w)} px and below), a head that keeps a 2×2 grid of where "
            "features are",
        )
    else:
        arch = Choice("resnet18", f"{h}×{w} inputs (> {COMPACT_SIDE} px): ResNet-18; expect long epochs on a CPU")
    chosen["arch"] = arch
    n = facts.num_train
    if n is None or n >= FEW_SAMPLES:
        chosen["batch_size"] = Choice(SIZED_BATCH, "suits SGD with BatchNorm on small models")
    else:
        batch = min(max(8, 1 << max(int(n // 10).bit_length() - 1, 0)), SIZED_BATCH)
        if batch <= n:
            chosen["batch_size"] = Choice(batch, f"about a tenth of the {n} training samples")
        else:  # fewer samples than the smallest batch: one batch of all of them
            chosen["batch_size"] = Choice(max(n, 1), f"all {n} training samples in one batch")
    return chosen


def recipe_defaults(dataset: str) -> dict[str, Any]:
    """The data-dependent settings of ``dataset``'s recipe (``threads``: torch's setting)."""
    table = recipe(dataset)
    return {**{k: table[k] for k in DATA_DEPENDENT if k in table}, "threads": None}


def recipe_base(dataset: str) -> dict[str, Any]:
    """The settings of ``dataset``'s recipe that are not data-dependent defaults (T, β, ...): the
    base of a config that names the data set; empty for a data set without a recipe."""
    if dataset not in list_datasets() or not dataset_info(dataset).recipe:
        return {}
    return {k: v for k, v in recipe(dataset).items() if k not in DATA_DEPENDENT}


_SIZED_HELP = {
    "arch": f"sized to the input: digits_resnet up to {SMALL_SIDE} px, small_resnet up to {COMPACT_SIDE} px, "
    "resnet18 beyond",
    "epochs": str(SIZED_EPOCHS),
    "batch_size": f"{SIZED_BATCH}, or about a tenth of the samples below {FEW_SAMPLES}",
    "lr": f"{SIZED_STEP:g}, x T for the methods that scale their loss by 1/T (RateBP-based)",
    "lr_schedule": "step",
    "threads": "the cores free at the start",
    "val_fraction": str(SIZED_VAL_FRACTION),
}


def _by_value(values: dict[str, Any]) -> str:
    """``"300 on cifar10, cifar100; 100 on imagenet"`` from ``{data set: value}``."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(
            "torch's setting" if value is None else f"{value:g}" if isinstance(value, float) else str(value), []
        ).append(name)
    return "; ".join(f"{value} on {', '.join(names)}" for value, names in groups.items())


def default_help(name: str, general: Any) -> str | None:
    """What the ``--help`` of setting ``name`` says about its default, read from the tables here
    and :data:`esdsnn.recipes.RECIPES` (``general``: the field's own default); None when the data
    set does not change it."""
    recipes = [d for d in list_datasets() if dataset_info(d).recipe]
    if name in DATA_DEPENDENT:
        digits = DIGITS_DEFAULTS[name]
        return (
            f"default: {_by_value({'digits': digits})}; {_by_value({d: recipe_defaults(d)[name] for d in recipes})}"
            f"; else {_SIZED_HELP[name]}"
        )
    special = {d: recipe_base(d)[name] for d in recipes if recipe_base(d).get(name, general) != general}
    if not special:
        return None
    return f"default: {general}; the recipe's {_by_value(special)}"


def _half(side: int) -> int:
    return (side + 1) // 2


__all__ = [
    "DATA_DEPENDENT",
    "RECIPE_DEFAULTS",
    "SIZED_EPOCHS",
    "SIZED_STEP",
    "Choice",
    "DataFacts",
    "default_help",
    "fixed_defaults",
    "recipe_base",
    "recipe_defaults",
    "sized_defaults",
]
