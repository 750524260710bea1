"""What a run leaves on disk: its directory, ``metrics.csv`` and ``summary.json``.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``summary.json`` (final figures and the environment) and the checkpoints ``last.pt`` / ``best.pt``.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch

from esdsnn.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"

# Columns every metrics.csv starts and ends with; the method's loss parts go in between.
LEAD_COLUMNS = ("epoch", "lr")
TAIL_COLUMNS = ("train_acc", "test_acc", "epoch_s")
SUMMARY_KEYS = ("test_acc", "method", "arch", "T", "epochs", "wall_s", "dataset")


def new_run_dir(out: Optional[str], method: str, root: str | Path = "runs") -> Path:
    """Create the directory of a new run: ``out`` if given (it must not already hold a run),
    else ``runs/<YYYYmmdd-HHMMSS>-<method>`` (with ``-2``, ``-3``... if taken)."""
    if out:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a directory")
        if (path / CONFIG_FILE).exists() or any(path.glob("*.pt")):
            raise ConfigError(
                f"run directory {path} already holds a run; choose another --out, or continue it "
                f"with --resume {path}"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{method}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def existing_run_dir(run: str | Path) -> Path:
    """Check that ``run`` is a run directory (it has a config.yaml)."""
    path = Path(run)
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} not found")
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not an esdsnn run directory (no {CONFIG_FILE})")
    return path


class MetricsLog:
    """Appends one row per epoch to ``metrics.csv``; columns fixed by the first row written.

    Columns: ``epoch, lr, <loss parts of the method, in its order>, train_acc, test_acc, epoch_s``
    (``test_acc`` empty for epochs without evaluation).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.columns: Optional[list[str]] = None
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), None)
            self.columns = header or None

    @staticmethod
    def columns_for(parts: Iterable[str]) -> list[str]:
        middle = [p for p in parts if p not in LEAD_COLUMNS + TAIL_COLUMNS]
        middle.sort(key=lambda p: p != "loss")  # the total first, then the method's parts in order
        return [*LEAD_COLUMNS, *middle, *TAIL_COLUMNS]

    def write(self, row: Mapping[str, Any]) -> None:
        new = self.columns is None
        if new:
            self.columns = self.columns_for(k for k in row if k not in LEAD_COLUMNS + TAIL_COLUMNS)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in self.columns})

    def truncate(self, epochs: int) -> None:
        """Keep the header and the rows of epochs 1..``epochs`` (used when resuming)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epochs]
        with self.path.open("w", newline="") as fh:
            csv.writer(fh).writerows(kept)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def environment(device: torch.device) -> dict[str, Any]:
    """The facts every result is recorded with."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_summary(run: str | Path) -> dict[str, Any]:
    path = Path(run) / SUMMARY_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found (did the run finish?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def epoch_line(epoch: int, epochs: int, row: Mapping[str, Any]) -> str:
    """One human-readable line per epoch."""
    text = f"epoch {epoch}/{epochs}  lr {row['lr']:.4g}  loss {row['loss']:.4f}  train {row['train_acc']:.2%}"
    if row.get("test_acc") is not None:
        text += f"  test {row['test_acc']:.2%}"
    return text + f"  ({row['epoch_s']:.1f}s)"
