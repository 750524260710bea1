"""What a training session shows while it runs: TensorBoard curves, one line per epoch, warnings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from esdsnn.errors import warning
from esdsnn.runs.files import TENSORBOARD_DIR, TIMING_COLUMNS


class TensorBoardLog:
    """Per-epoch scalars in TensorBoard event files (``tb/``), when ``tensorboard`` is installed.

    Resuming purges the events of epochs after the checkpoint (``purge_step``), so the curves
    match ``metrics.csv``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run_dir: str | Path, purge_step: Optional[int] = None) -> Optional[TensorBoardLog]:
        """A log in ``run_dir/tb``, or None when the tensorboard package is not installed."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return cls(SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step))

    def write(self, row: Mapping[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(_tb_tag(key), value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tb_tag(key: str) -> str:
    if key.startswith("acc") or key.endswith("_acc"):
        return f"accuracy/{key}"
    if key in ("lr",) or key in TIMING_COLUMNS:
        return f"run/{key}"
    if key == "firing_rate":
        return "spikes/firing_rate"
    return f"loss/{key}"


def epoch_line(epoch: int, epochs: int, row: Mapping[str, Any]) -> str:
    """One human-readable line per epoch (accuracies in %)."""
    text = f"epoch {epoch}/{epochs}  lr {row['lr']:.4g}  loss {row['loss']:.4f}  train {row['train_acc']:.2%}"
    if row.get("val_acc") is not None:
        text += f"  val {row['val_acc']:.2%}"
    if row.get("test_acc") is not None:
        text += f"  test {row['test_acc']:.2%}"
    if row.get("firing_rate") is not None:
        text += f"  rate {row['firing_rate']:.3f}"
    return text + f"  ({row['epoch_s']:.1f}s)"


def _count(n: Optional[int]) -> str:
    return "?" if n is None else f"{n:,}"


def run_header(
    config: Any,
    bundle: Any,
    chosen: Mapping[str, Any],
    model: Any,
    method: Any,
    device: Any,
    world_size: int,
    run_dir: Path,
) -> str:
    """The block printed before training: what runs on what, and why each default was chosen."""

    def why(*names: str) -> str:
        reasons = [f"{n.replace('_', ' ')}: {chosen[n].reason}" for n in names if n in chosen]
        return f"  [default: {'; '.join(reasons)}]" if reasons else ""

    c = config
    shape = "×".join(str(v) for v in bundle.input_shape)
    kind = f"event frames, {bundle.time_steps} per sample, of {shape}" if bundle.time_steps else f"{shape} images"
    if bundle.val is not None:
        split = (
            f"{_count(bundle.num_train)} train + {_count(bundle.num_val)} val ({c.val_fraction:.0%} held out, "
            f"stratified, seed {c.seed}) + {_count(bundle.num_test)} test"
        )
        selection = "the best epoch is selected on the validation split; the test set is measured after the last epoch"
    else:
        split = f"{_count(bundle.num_train)} train + {_count(bundle.num_test)} test"
        selection = "the best epoch is selected on the test set (as the paper's recipes do)"
    model_params = sum(p.numel() for p in model.parameters())
    extra = sum(p.numel() for p in method.parameters()) - model_params
    where = f"{c.dataset} ({c.data_path})" if c.data_path else c.dataset
    lines = [
        f"{c.method} on {where} -> {run_dir}",
        f"  data    {split}; {kind}; {bundle.num_classes} classes",
        f"  model   {c.arch}, {model_params:,} parameters"
        + (f" (+{extra:,} training-only)" if extra > 0 else "")
        + why("arch"),
        f"  train   T={c.T}, {c.optim.epochs} epochs, batch {c.optim.batch_size}"
        + (f" ({world_size} processes)" if world_size > 1 else "")
        + f", lr {c.optim.lr:g} (SGD, cosine per {c.optim.lr_schedule})"
        + why("epochs", "batch_size", "lr", "lr_schedule"),
        f"  device  {device}, {torch.get_num_threads()} thread(s)" + f", precision {c.run.precision}" + why("threads"),
        f"  select  {selection}" + why("val_fraction"),
    ]
    return "\n".join(lines)


#: A warning line on stderr (the default ``warn`` of training).
stderr_warning = warning
