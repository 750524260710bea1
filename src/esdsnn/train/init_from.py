"""Start a run from another run's weights (``--init-from``): fine-tuning, more time steps, another
method, or another data set with a new head.

Weights are matched by name and shape: everything that fits is loaded, a tensor whose shape
differs (the classifier of a data set with other classes) keeps its fresh initialisation, and
the run says in one line what was loaded and what was not. Only weights and BatchNorm
statistics move; the optimiser, schedule and counters start fresh (it is a new run). Weights do
not depend on T, so a T = 4 run initialises a T = 6 one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esdsnn.errors import CheckpointError
from esdsnn.runs.checkpoint import BEST, LAST, load_checkpoint
from esdsnn.runs.files import CONFIG_FILE
from esdsnn.train.state import load_split_state, split_state


@dataclass
class InitReport:
    """What :func:`init_from` loaded, from where."""

    source: Path
    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)  # in both, with other shapes: left fresh
    missing: list[str] = field(default_factory=list)  # only in this model: left fresh
    unused: list[str] = field(default_factory=list)  # only in the source: ignored

    def line(self) -> str:
        parts = [f"initialised from {self.source}: {len(self.loaded)} tensors loaded"]
        if self.reshaped:
            parts.append(f"{len(self.reshaped)} left fresh because their shapes differ ({_names(self.reshaped)})")
        if self.missing:
            parts.append(f"{len(self.missing)} not in the source, left fresh ({_names(self.missing)})")
        if self.unused:
            parts.append(f"{len(self.unused)} of the source unused ({_names(self.unused)})")
        return "; ".join(parts)


def _names(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def source_checkpoint(source: str | Path) -> Path:
    """The checkpoint ``--init-from`` names: a run directory's ``best.pt`` (else ``last.pt``), or a file."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"--init-from {path}: not an esdsnn run directory (no {CONFIG_FILE})")
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"--init-from {path}: the run has no {BEST} or {LAST}")
    if not path.is_file():
        raise CheckpointError(f"--init-from {path} not found; give a run directory or a checkpoint file")
    return path


def init_from(method: nn.Module, model: nn.Module, source: str | Path) -> InitReport:
    """Load into ``model`` — and into the method's own modules (ESD branches) when the source
    has them — every tensor of the source checkpoint that matches by name and shape."""
    path = source_checkpoint(source)
    ckpt: dict[str, Any] = load_checkpoint(path)
    report = InitReport(path)
    own_model, own_extra = split_state(method, model)
    merged_model = _matching(own_model, ckpt["model"], report, prefix="")
    merged_extra = (
        _matching(own_extra, ckpt.get("extra") or {}, report, prefix="branches: ") if own_extra else own_extra
    )
    if not report.loaded:
        raise CheckpointError(
            f"--init-from {path}: no tensor matches this model by name and shape (another architecture?)"
        )
    load_split_state(method, model, merged_model, merged_extra)
    return report


def _matching(
    own: dict[str, torch.Tensor], source: dict[str, torch.Tensor], report: InitReport, prefix: str
) -> dict[str, torch.Tensor]:
    """``own`` with every tensor of ``source`` that fits by name and shape put in."""
    merged = dict(own)
    for key, value in source.items():
        if key not in own:
            report.unused.append(prefix + key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.reshaped.append(prefix + key)
        else:
            merged[key] = value.to(own[key].dtype)
            report.loaded.append(prefix + key)
    report.missing += [prefix + k for k in own if k not in source]
    return merged


__all__ = ["InitReport", "init_from", "source_checkpoint"]
