"""A saved run, reloaded: its trained model with its data, to evaluate, report or export.

:class:`TrainedModel` is what everything after training works on — the model of a run with its
test data, the steps of its evaluation pass and its method's spec — whether it was just trained
(training hands one to its after-training callbacks, such as the report) or reloaded from a
checkpoint by :func:`load_run`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

import esdsnn
from esdsnn.config import TrainConfig
from esdsnn.data import BatchSource
from esdsnn.errors import CheckpointError, ConfigError, brief, notice, warning
from esdsnn.methods import MethodSpec, method_spec
from esdsnn.runs.build import build_data, build_model, resolve_device, torch_threads
from esdsnn.runs.checkpoint import BEST, LAST, describe, load_checkpoint, load_latest
from esdsnn.runs.claim import stopped_before_first_checkpoint
from esdsnn.runs.files import CONFIG_FILE, ENV_FILE, SUMMARY_FILE, existing_run_dir, read_json
from esdsnn.runs.fingerprint import data_changed
from esdsnn.runs.lock import Holder, holder
from esdsnn.runtime.precision import use_precision


@dataclass
class TrainedModel:
    """The model of a run with what measuring it needs."""

    run_dir: Path
    config: TrainConfig
    spec: MethodSpec
    model: nn.Module
    test: BatchSource
    steps: int  # time steps of the evaluation pass (1 for a non-spiking model)
    device: torch.device
    input_shape: tuple[int, ...] = ()  # one sample (one frame of event data): (C, H, W)


@dataclass
class LoadedRun(TrainedModel):
    """A :class:`TrainedModel` reloaded from ``checkpoint`` (its contents in ``ckpt``)."""

    checkpoint: Path = Path()
    ckpt: dict[str, Any] = field(default_factory=dict)
    still_training: Optional[str] = None  # the process writing the run while it was read, in words


def load_run(
    run_dir: str | os.PathLike, *, checkpoint: str = "last", device: Optional[str] = None, threads: Optional[int] = None
) -> LoadedRun:
    """Rebuild a run's model from a checkpoint (``last``, ``best`` or a file) with its data set,
    as its method trained it (the ReLU twin for ``ann``; a distilled student without its teacher).
    A run that is still training can be read (its lock is not taken): a notice says which epoch
    the checkpoint is from (``still_training``)."""
    run_dir = existing_run_dir(run_dir)
    writer = holder(run_dir)
    path, ckpt = read_checkpoint(run_dir, checkpoint, writer)
    if writer is not None:
        notice(
            f"{run_dir} is still training ({writer.describe()}): reading its checkpoint {path.name} from "
            f"{describe(ckpt)}, not the final model"
        )
    try:
        config = TrainConfig.from_saved(ckpt["config"], source=str(path)).resolved()
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} holds a config this esdsnn cannot use: {exc}") from None
    n_threads = threads if threads is not None else config.run.threads
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    dev = resolve_device(device or config.run.device)
    changed = data_changed(recorded_fingerprint(run_dir), config.data_path)
    if changed:
        warning(changed)
    bundle = build_data(config, dev)
    spec = method_spec(config.method)
    model = spec.prepared(build_model(config, bundle))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit model {config.arch}: {brief(exc, 300)}") from None
    return LoadedRun(
        run_dir,
        config,
        spec,
        model.to(dev),
        bundle.test,
        spec.inference_steps(config.T),
        dev,
        tuple(bundle.input_shape),
        checkpoint=path,
        ckpt=ckpt,
        still_training=None if writer is None else writer.describe(),
    )


def read_checkpoint(run_dir: Path, checkpoint: str, writer: Optional[Holder] = None) -> tuple[Path, dict[str, Any]]:
    """The checkpoint a reader takes: ``last`` falls back, with one warning line, to the most
    advanced readable ``last.prev.pt`` or ``best.pt`` (as resuming does); ``best`` and a file are
    read as named. A failure says what to do about it."""
    if checkpoint not in ("last", "best"):
        return Path(checkpoint), load_checkpoint(checkpoint)
    if checkpoint == "best":
        try:
            return run_dir / BEST, load_checkpoint(run_dir / BEST)
        except CheckpointError as exc:
            other = " (or read --checkpoint last)" if (run_dir / LAST).is_file() else ""
            raise CheckpointError(f"{exc}{other}") from None
    try:
        path, ckpt, problems = load_latest(run_dir, weights_only=True)
    except CheckpointError as exc:
        if writer is not None:
            fix = f"the run is still starting ({writer.describe()}): try again once it has saved its first checkpoint"
        elif stopped_before_first_checkpoint(run_dir):
            fix = f"the run stopped before its first checkpoint: start it again with esdsnn train --resume {run_dir}"
        else:
            fix = f"retrain it: esdsnn train --config {run_dir / CONFIG_FILE} --out NEW_DIR"
        raise CheckpointError(f"{exc}; {fix}") from None
    if problems:
        warning(f"{'; '.join(problems)}; reading {path} ({describe(ckpt)}) instead")
    return path, ckpt


@dataclass
class Measured:
    """Accuracy and mean cross-entropy of the spike pass (main head) over some batches."""

    correct: int
    total: int
    loss_sum: float  # summed over samples

    @property
    def acc(self) -> float:
        return self.correct / max(self.total, 1)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.total, 1)


def measure(model: nn.Module, batches: BatchSource, T: int) -> Measured:
    """Correct predictions, samples and summed cross-entropy of the spike pass, main head (the
    only accuracy esdsnn reports), with one device sync per batch."""
    correct = total = 0
    loss_sum = 0.0
    for x, y in batches:
        logits = esdsnn.predict(model, x, T)
        hits, loss = torch.stack(
            [(logits.argmax(-1) == y).sum().double(), F.cross_entropy(logits.float(), y, reduction="sum").double()]
        ).tolist()
        correct, loss_sum, total = correct + int(hits), loss_sum + loss, total + int(y.numel())
    return Measured(correct, total, loss_sum)


def recorded_fingerprint(run_dir: Path) -> Optional[dict[str, Any]]:
    """The fingerprint of the data a run was trained on (summary.json, else env.json)."""
    for name in (SUMMARY_FILE, ENV_FILE):
        data = read_json(run_dir / name) or {}
        if data.get("data_fingerprint"):
            return data["data_fingerprint"]
    return None


def test_accuracy(model: nn.Module, batches: BatchSource, T: int) -> tuple[int, int]:
    """``(correct, total)`` of the spike pass, main head."""
    figures = measure(model, batches, T)
    return figures.correct, figures.total


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    test_acc: float
    correct: int
    total: int
    checkpoint: Path
    epoch: int
    T: int  # steps of the test-time pass
    spiking: bool
    step: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    still_training: Optional[str] = (
        None  # the run was still training (its writer, in words): an intermediate checkpoint
    )


def evaluate(
    run_dir: str | Path, *, checkpoint: str = "last", device: Optional[str] = None, threads: Optional[int] = None
) -> EvalResult:
    """Reload the model of a run (``last`` or ``best`` checkpoint, or a file path) and measure its
    test accuracy (spike pass, main head) on the run's data set and split with the run's T."""
    with torch_threads(None):  # restores the caller's thread count
        run = load_run(run_dir, checkpoint=checkpoint, device=device, threads=threads)
        with use_precision(run.config.run.precision):
            correct, total = test_accuracy(run.model, run.test, run.steps)
    return EvalResult(
        test_acc=correct / max(total, 1),
        correct=correct,
        total=total,
        checkpoint=run.checkpoint,
        epoch=int(run.ckpt["epoch"]),
        T=run.steps,
        spiking=run.spec.spiking,
        step=int(run.ckpt.get("step", 0)),
        config=run.config.to_dict(),
        still_training=run.still_training,
    )


__all__ = [
    "EvalResult",
    "LoadedRun",
    "Measured",
    "TrainedModel",
    "evaluate",
    "load_run",
    "measure",
    "read_checkpoint",
    "recorded_fingerprint",
    "test_accuracy",
]
