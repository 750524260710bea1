"""Checkpoints: a dict of plain tensors, numbers and strings, written atomically.

Layout (``format_version`` 1)::

    {"format_version": 1, "model": <SNN state_dict>, "extra": <state of the method's own modules
     (ESD branches), without the model>, "optimizer": ..., "scheduler": ..., "epoch": <completed
     epochs>, "step": <batches done in the next epoch; 0 at an epoch boundary>,
     "progress": {...running sums of the interrupted epoch...}, "config": <TrainConfig as dict>,
     "metrics": {...}}

Files are written to a temporary file in the same folder, flushed to disk and renamed over the
target, so a crash never leaves a half-written checkpoint; they are read with
``torch.load(weights_only=True)``, which executes no pickled code.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esdsnn.errors import CheckpointError

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


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


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` if it
    is missing, unreadable or of another format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({reason})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path} is not an esdsnn checkpoint")
    if data["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}, this esdsnn reads "
            f"version {FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "config", "epoch") if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return data
