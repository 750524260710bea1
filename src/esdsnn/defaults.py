"""Defaults of the settings that depend on the data set, with the reason for each.

Three kinds of data set (:class:`esdsnn.data.DatasetInfo`):

- **a paper recipe** (CIFAR-10/100, CIFAR10-DVS, ImageNet): the CIFAR recipe of SPEC §7 —
  ResNet-18, 300 epochs, batch 128, lr 0.1, a cosine stepped per epoch — and the best epoch
  selected on the test set, as the paper does (``val_fraction`` 0); the ready configs in
  ``configs/`` set the rest;
- **the bundled digits**: a short run tuned to finish well within 3 minutes on 2 CPU cores;
- **anything else** (``npz``, a registered loader): sized to the data once it is read
  (:func:`sized_defaults`): the model from the input size, the batch from the number of
  training samples, a short budget of :data:`SIZED_EPOCHS` epochs, the free CPU cores,
  ``val_fraction`` 0.1 (the best epoch is selected on held-out training data), and an optimiser
  set to reach its accuracy within a few epochs: a cosine that moves every step (so that even a
  2-epoch run anneals to 0) and a step of :data:`SIZED_STEP` on the unscaled loss (lr 0.4 for
  the RateBP methods at T = 4, whose loss is scaled by 1/T; 0.1 for BPTT). Chosen by racing
  SpikingJelly's tutorial CSNN for 2 epochs on three sets (README, "Your own data").
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from esdsnn.data import dataset_info

#: Settings the data set decides when they are left unset.
DATA_DEPENDENT = ("arch", "epochs", "batch_size", "lr", "lr_schedule", "threads", "val_fraction")
SIZED_EPOCHS = 20
SIZED_VAL_FRACTION = 0.1
#: SGD's learning rate on the unscaled loss for data without a recipe: lr = SIZED_STEP / loss scale.
SIZED_STEP = 0.1

RECIPE_DEFAULTS: dict[str, Any] = {"arch": "resnet18", "epochs": 300, "batch_size": 128, "lr": 0.1,
                                   "lr_schedule": "epoch", "threads": None, "val_fraction": 0.0}
# digits: tuned so that the default ESD run reaches >= 96% test accuracy (spike pass) in well
# under 3 minutes on 2 CPU cores. One thread: the model is small, and two threads slow down many
# times over as soon as the other core is busy (measured: 0.3-0.8 s vs 6-7 s per step on a
# loaded 2-core machine).
DIGITS_DEFAULTS: dict[str, Any] = {"arch": "digits_resnet", "epochs": 10, "batch_size": 64, "lr": 0.1,
                                   "lr_schedule": "epoch", "threads": 1, "val_fraction": SIZED_VAL_FRACTION}


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
    def of(cls, bundle: Any) -> "DataFacts":
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
        reasons = {"val_fraction": "the paper's recipe selects on the test set"}
        return {k: Choice(v, reasons.get(k, "the paper's CIFAR recipe (SPEC §7)")) for k, v in RECIPE_DEFAULTS.items()}
    lr = SIZED_STEP / loss_scale
    lr_reason = "SGD with BatchNorm" if loss_scale == 1 else (
        f"SGD with BatchNorm, {SIZED_STEP:g} on the loss before this method's scale of {loss_scale:g}")
    return {
        "epochs": Choice(SIZED_EPOCHS, "a short budget for data without a recipe; raise --epochs for more"),
        "lr": Choice(float(f"{lr:.6g}"), lr_reason),
        "lr_schedule": Choice("step", "a cosine per step: a run of a few epochs still anneals to 0"),
        "threads": free_cores_choice(),
        "val_fraction": Choice(SIZED_VAL_FRACTION, "data without a recipe: the best epoch is selected on held-out data"),
    }


def sized_defaults(dataset: str, facts: DataFacts, loss_scale: float = 1.0) -> dict[str, Choice]:
    """All defaults for ``dataset`` with data ``facts`` (a recipe or digits ignores the facts)."""
    chosen = fixed_defaults(dataset, loss_scale)
    if dataset == "digits" or dataset_info(dataset).recipe:
        return chosen
    c, h, w = facts.input_shape[-3:]
    side = max(h, w)
    if side <= 16:
        arch = Choice("digits_resnet", f"{h}×{w} inputs (≤ 16 px): a small ResNet at full resolution")
    elif side <= 64:
        arch = Choice("small_resnet", f"{h}×{w} inputs (17–64 px): a stride-2 stem (stages at {_half(h)}×{_half(w)} "
                                      f"px and below), a head that keeps a 2×2 grid of where features are")
    else:
        arch = Choice("resnet18", f"{h}×{w} inputs (> 64 px): ResNet-18; expect long epochs on a CPU")
    chosen["arch"] = arch
    n = facts.num_train
    if n is None or n >= 640:
        chosen["batch_size"] = Choice(64, "suits SGD with BatchNorm on small models")
    else:
        batch = max(8, 1 << max(int(n // 10).bit_length() - 1, 0))
        chosen["batch_size"] = Choice(min(batch, 64), f"about a tenth of the {n} training samples")
    return chosen


def _half(side: int) -> int:
    return (side + 1) // 2


__all__ = ["Choice", "DATA_DEPENDENT", "DataFacts", "RECIPE_DEFAULTS", "SIZED_EPOCHS", "SIZED_STEP", "fixed_defaults",
           "sized_defaults"]
