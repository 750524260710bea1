"""The training state a checkpoint holds: the run's counters (:class:`RunState`), the
model/method split of the weights, every RNG state, finiteness checks and the size estimate of
one checkpoint (the files themselves: :mod:`esdsnn.runs.checkpoint`); and what a session
returns (:class:`RunResult`)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn


def split_state(method: nn.Module, model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model state, the rest of the method's state)``: the SNN alone can then be rebuilt and
    loaded without the method (its branches are training-only)."""
    prefix = _prefix_of(method, model)
    model_state = model.state_dict()
    if prefix is None:  # the method does not hold the model as a submodule
        return model_state, method.state_dict()
    extra = {k: v for k, v in method.state_dict().items() if not k.startswith(prefix)}
    return model_state, extra


def load_split_state(method: nn.Module, model: nn.Module, model_state: dict, extra: dict) -> None:
    """Inverse of :func:`split_state` (strict: every key must match)."""
    prefix = _prefix_of(method, model)
    if prefix is None:
        model.load_state_dict(model_state)
        method.load_state_dict(extra)
        return
    full = {prefix + k: v for k, v in model_state.items()}
    full.update(extra)
    method.load_state_dict(full)


def _prefix_of(method: nn.Module, model: nn.Module) -> str | None:
    if method is model:
        return ""
    for name, module in method.named_modules():
        if module is model and name:
            return name + "."
    return None


def checkpoint_nbytes(method: nn.Module, optimizer_copies: int = 1) -> int:
    """An estimate of one checkpoint's size: the method's state plus ``optimizer_copies`` copies
    of its parameters (SGD momentum), plus a little for the rest."""
    params = sum(p.numel() * p.element_size() for p in method.parameters())
    buffers = sum(b.numel() * b.element_size() for b in method.buffers())
    return params * (1 + optimizer_copies) + buffers + 64 * 1024


def all_finite(tensors: Iterable[Any]) -> bool:
    """Whether every floating-point tensor among ``tensors`` is free of NaN/inf."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point())


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value


# ---- random number generators ---------------------------------------------------------------------
def rng_state(cuda: bool = False) -> dict[str, Any]:
    """Every global RNG state as tensors and plain values (``weights_only``-loadable)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Any) -> None:
    """Restore what :func:`rng_state` saved (a bare tensor: a version-1 checkpoint's torch state)."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    py = state.get("python")
    if py is not None:
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state.get("numpy")
    if npy is not None:
        np.random.set_state(
            (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
        )
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda][: torch.cuda.device_count()])


@dataclass
class RunState:
    """Counters of the run so far (saved in checkpoints so that a resumed run continues them)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # batches done in the current epoch
    part_sums: dict[str, float] = field(default_factory=dict)
    seen: int = 0
    train_correct: int = 0
    epoch_s: float = 0.0
    wall_s: float = 0.0
    train_acc: Optional[float] = None
    test_acc: Optional[float] = None
    test_correct: Optional[int] = None
    test_total: Optional[int] = None
    test_loss: Optional[float] = None
    val_acc: Optional[float] = None
    val_loss: Optional[float] = None
    firing_rate: Optional[float] = None
    best_selection: Optional[float] = None  # the accuracy the best epoch was selected on (val, else test)
    best_val_acc: Optional[float] = None
    best_val_loss: Optional[float] = None
    best_test_acc: Optional[float] = None
    best_epoch: Optional[int] = None
    # how --resume --epochs changed the plan after the first epoch: {"from", "to", "after_epoch"} each
    replans: list[dict[str, int]] = field(default_factory=list)

    def add_totals(self, keys: list[str], totals: list[float]) -> None:
        """Add one step's ``[n, n·part_1, ..., n·part_k, correct, ...]`` (summed over processes)."""
        for k, v in zip(keys, totals[1 : 1 + len(keys)]):
            self.part_sums[k] = self.part_sums.get(k, 0.0) + v
        self.seen += int(totals[0])
        self.train_correct += int(totals[1 + len(keys)])

    def mean(self, key: str) -> float:
        return self.part_sums.get(key, float("nan")) / max(self.seen, 1)

    def epoch_parts(self) -> dict[str, float]:
        return {k: v / max(self.seen, 1) for k, v in self.part_sums.items()}

    def end_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0
        self.part_sums, self.seen, self.train_correct, self.epoch_s = {}, 0, 0, 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("epoch", "step")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, epoch: int, step: int) -> RunState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "best_selection" not in known:  # saved before validation splits: selected on the test set
            known["best_selection"] = known.get("best_test_acc")
        return cls(epoch=epoch, step=step, **known)


def replan_notes(replans: Iterable[dict[str, int]]) -> tuple[str, ...]:
    """One line per change of a run's epochs by ``--resume --epochs`` (config.yaml's comments)."""
    return tuple(
        f"epochs: {'extended' if r['to'] > r['from'] else 'shortened'} from {r['from']} to {r['to']} by "
        f"esdsnn train --resume after epoch {r['after_epoch']}; the cosine was re-planned there (a warm restart), "
        f"so this is not a {r['to']}-epoch run from the start"
        for r in replans
    )


@dataclass
class RunResult:
    """What :func:`esdsnn.train.train` returns: the run directory, its summary, how it ended."""

    run_dir: Path
    summary: dict[str, Any]
    status: str  # "completed" or "interrupted"
    epoch: int = 0  # completed epochs
    step: int = 0  # batches done in the epoch after that (interrupted runs)
    steps_per_epoch: int = 0
    signal: Optional[int] = None  # the signal that interrupted the run (SIGINT, SIGTERM), if any
    rank: int = 0  # this process's rank (only rank 0 writes files and prints)

    @property
    def test_acc(self) -> Optional[float]:
        return self.summary.get("test_acc")
