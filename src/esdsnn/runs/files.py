"""What a run leaves on disk: the names of its files, creating and checking its directory,
``metrics.csv``, ``summary.json`` and ``env.json``.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.csv`` (one row per epoch),
``summary.json`` (final figures and the environment), ``env.json`` (package version, git
revision, torch version, device, threads, processes: written when the run starts, and again by
each resumed session), the checkpoints ``last.pt`` / ``last.prev.pt`` / ``best.pt``
(:mod:`esdsnn.runs.checkpoint`), the report (``report.md`` and its figures) and, with the
``tensorboard`` package installed, TensorBoard event files in ``tb/``. Every file is written
atomically (:mod:`esdsnn.atomic`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from esdsnn.atomic import write_json_atomic as write_json  # noqa: F401  (write_json: the run files API)
from esdsnn.atomic import write_text_atomic
from esdsnn.errors import CheckpointError, ConfigError
from esdsnn.runtime.precision import cpu_capability

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
ENV_FILE = "env.json"
TENSORBOARD_DIR = "tb"
LAST_CHECKPOINT = "last.pt"  # (the checkpoint files: esdsnn.runs.checkpoint)
REPORT_FILE = "report.md"
FIRING_JSON = "firing_rates.json"
FIRING_PNG = "firing_rates.png"
CURVES_PNG = "training_curves.png"
TIMING_COLUMNS = ("epoch_s",)

# Columns every metrics.csv starts and ends with; the method's loss parts go in between.
LEAD_COLUMNS = ("epoch", "lr")
TAIL_COLUMNS = ("train_acc", "val_acc", "val_loss", "test_acc", "test_loss", "epoch_s")
SUMMARY_KEYS = ("test_acc", "method", "arch", "T", "epochs", "wall_s", "dataset")


def new_run_dir(out: Optional[str], method: str, root: str | Path = "runs") -> Path:
    """Create the directory of a new run: ``out`` if given (whether it may hold a run is decided
    under its lock, :mod:`esdsnn.runs.claim`), else ``runs/<YYYYmmdd-HHMMSS>-<method>`` (with
    ``-2``, ``-3``... if taken)."""
    if out:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} exists and is not a directory")
        _mkdir(path, exist_ok=True)
        return path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{method}"
    path, n = base, 1
    while True:
        try:
            _mkdir(path, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def _mkdir(path: Path, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok or not path.is_dir():
            raise
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {path}: {exc.strerror or exc}") from None


def check_run_dir(path: str | Path, need_bytes: int) -> None:
    """Refuse, before training starts, a run directory that cannot take the run's files: write
    and ``fsync`` a probe file, then compare the free space with ``need_bytes``."""
    path = Path(path)
    probe = path / ".esdsnn-write-probe"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ConfigError(f"cannot write to run directory {path}: {exc.strerror or exc}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    try:
        free = shutil.disk_usage(path).free
    except OSError:  # pragma: no cover - unusual file systems
        return
    if free < need_bytes:
        raise ConfigError(
            f"run directory {path} has {_mib(free)} free but its checkpoints need about {_mib(need_bytes)} "
            f"(last, previous and best, plus one being written); free some space or choose another --out"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def existing_run_dir(run: str | os.PathLike) -> Path:
    """Check that ``run`` is a run directory (it has a config.yaml)."""
    path = Path(run)
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} not found")
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not an esdsnn run directory (no {CONFIG_FILE})")
    return path


class MetricsLog:
    """Appends one row per epoch to ``metrics.csv``; columns fixed by the first row written.

    Columns: ``epoch, lr, <loss parts of the method, in its order>, firing_rate, train_acc,
    val_acc, val_loss, test_acc, test_loss, epoch_s``: accuracies as fractions, losses as mean
    cross-entropy, ``firing_rate`` the mean spike rate of all neurons in the epoch's training
    steps; cells are empty for epochs without that evaluation (with a validation split the test
    set is measured after the last epoch only).

    Every write replaces the file atomically (temp file + rename), so a run killed at any moment
    leaves whole rows only.
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
        # the total first, then the method's parts in order, the firing rate last
        middle.sort(key=lambda p: 0 if p == "loss" else 2 if p == "firing_rate" else 1)
        return [*LEAD_COLUMNS, *middle, *TAIL_COLUMNS]

    def write(self, row: Mapping[str, Any]) -> None:
        if self.columns is None:
            self.columns = self.columns_for(k for k in row if k not in LEAD_COLUMNS + TAIL_COLUMNS)
        rows = self._rows() if self.path.is_file() else [self.columns]
        rows.append([_cell(row.get(k)) for k in self.columns])
        self._replace(rows)

    def truncate(self, epochs: int) -> None:
        """Keep the header and the rows of epochs 1..``epochs`` (used when resuming)."""
        if not self.path.is_file():
            return
        rows = self._rows()
        if not rows:
            return
        self._replace([rows[0]] + [r for r in rows[1:] if r and _epoch_of(r) <= epochs])

    def _rows(self) -> list[list[str]]:
        with self.path.open(newline="") as fh:
            return list(csv.reader(fh))

    def _replace(self, rows: list[list[Any]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        write_text_atomic(self.path, buffer.getvalue())


def _epoch_of(row: list[str]) -> float:
    try:
        return int(row[0])
    except ValueError:  # not a row this log wrote: drop it
        return float("inf")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """The facts every result is recorded with."""
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": cpu_capability(),
    }
    if world_size > 1:
        env["world_size"] = world_size
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def run_environment(device: torch.device, world_size: int = 1, **extra: Any) -> dict[str, Any]:
    """What ``env.json`` records: :func:`environment` plus the package version, git revision,
    CUDA/cuDNN versions, platform, command line and start time."""
    from esdsnn import __version__

    env: dict[str, Any] = {"esdsnn": __version__, "git": git_revision(), **environment(device, world_size)}
    env["world_size"] = world_size
    env["cuda"] = torch.version.cuda
    if device.type == "cuda":
        env["cudnn"] = torch.backends.cudnn.version()
    env["platform"] = platform.platform()
    env["argv"] = list(sys.argv)
    env["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    env.update(extra)
    return env


def git_revision() -> Optional[str]:
    """The git commit of the esdsnn source (``+dirty`` with uncommitted changes to tracked files),
    or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def read_json(path: str | Path) -> Optional[dict[str, Any]]:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_summary(run: str | Path) -> dict[str, Any]:
    path = Path(run) / SUMMARY_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found (did the run finish?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
