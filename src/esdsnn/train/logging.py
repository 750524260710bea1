"""What a training session shows while it runs: TensorBoard curves, one line per epoch, warnings."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from esdsnn.runs.files import TENSORBOARD_DIR, TIMING_COLUMNS


class TensorBoardLog:
    """Per-epoch scalars in TensorBoard event files (``tb/``), when ``tensorboard`` is installed.

    Resuming purges the events of epochs after the checkpoint (``purge_step``), so the curves
    match ``metrics.csv``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run_dir: str | Path, purge_step: Optional[int] = None) -> Optional["TensorBoardLog"]:
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
    return f"loss/{key}"


def epoch_line(epoch: int, epochs: int, row: Mapping[str, Any]) -> str:
    """One human-readable line per epoch."""
    text = f"epoch {epoch}/{epochs}  lr {row['lr']:.4g}  loss {row['loss']:.4f}  train {row['train_acc']:.2%}"
    if row.get("test_acc") is not None:
        text += f"  test {row['test_acc']:.2%}"
    return text + f"  ({row['epoch_s']:.1f}s)"


def stderr_warning(line: str) -> None:
    """A warning line on stderr (the default ``warn`` of training)."""
    print(f"esdsnn: warning: {line}", file=sys.stderr, flush=True)
