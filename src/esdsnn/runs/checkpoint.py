"""Checkpoints: a dict of plain tensors, numbers and strings, written atomically.

Layout (``format_version`` 2; version 1 files still load)::

    {"format_version": 2, "model": <SNN state_dict>, "extra": <state of the method's own modules
     (ESD branches), without the model>, "optimizer": ..., "scheduler": ..., "scaler": <GradScaler
     state, {} without fp16>, "epoch": <completed epochs>, "step": <batches done in the next epoch;
     0 at an epoch boundary>, "progress": {...running sums of the interrupted epoch...},
     "data": {"epoch": ..., "step": ..., "steps_per_epoch": ..., "world_size": ...},
     "rng": {"torch": ..., "cuda": [...], "python": {...}, "numpy": {...}},
     "config": <TrainConfig as dict>, "esdsnn": <version>}

Every value is a tensor or plain Python data (NumPy's RNG state is stored as a tensor), so files
are read with ``torch.load(weights_only=True)``, which executes no pickled code.

Files are written to a temporary file in the same folder, flushed to disk (``fsync``) and renamed
over the target, so a crash never leaves a half-written checkpoint. A run keeps:

- ``last.pt``: the newest state (end of every epoch, every ``save_every_steps`` steps, on Ctrl-C
  or SIGTERM, and once before the first step);
- ``last.prev.pt``: the ``last.pt`` it replaced (renamed, not copied);
- ``best.pt``: the weights only (model, branches, epoch, config; no optimiser) after the epoch
  with the best selection accuracy so far (validation split, else test set).

Resuming (:func:`load_latest`) takes ``last.pt``; if it is missing, truncated or corrupt it says
so in one line and takes ``last.prev.pt`` (or an older run's full ``best.pt``). Readers
(``eval``, ``report``, ``export``) fall back the same way, to ``best.pt``'s weights too.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from esdsnn.atomic import atomic_write
from esdsnn.errors import CheckpointError, brief
from esdsnn.runs.files import LAST_CHECKPOINT

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LAST = LAST_CHECKPOINT
PREVIOUS = "last.prev.pt"
BEST = "best.pt"


# ---- writing and reading -----------------------------------------------------------------------
def save_checkpoint(path: str | Path, payload: dict[str, Any], *, keep_previous: str | Path | None = None) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically; return the path.

    With ``keep_previous``, an existing ``path`` is first renamed to that name (after the new file
    is safely on disk), so the state before this one stays available.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, **payload}
    with atomic_write(path, "wb", durable=True) as fh:
        torch.save(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
        if keep_previous is not None and path.is_file():  # the new file is on disk: keep the old one
            os.replace(path, keep_previous)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` if it
    is missing, unreadable or of another format version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        if isinstance(exc, pickle.UnpicklingError):  # torch's text would advise weights_only=False
            reason = "not a torch file of tensors and plain values; esdsnn never unpickles other objects"
        else:
            reason = brief(exc)
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({reason})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path} is not an esdsnn checkpoint")
    if data["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}, this esdsnn reads version {FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "config", "epoch") if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return data


def load_latest(
    run_dir: str | Path, map_location: str | torch.device = "cpu", *, weights_only: bool = False
) -> tuple[Path, dict[str, Any], list[str]]:
    """The checkpoint to resume ``run_dir`` from: ``(path, data, problems)``.

    ``last.pt`` when it reads; otherwise the most advanced (epoch, step) readable one of
    ``last.prev.pt`` and ``best.pt``, with ``problems`` holding one line per file that did not
    read. Raises :class:`CheckpointError` (naming ``last.pt``'s problem) when none reads.
    ``weights_only``: for readers (evaluation, report, export), a ``best.pt`` that holds only
    weights is a fallback too.
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    try:
        return run_dir / LAST, load_checkpoint(run_dir / LAST, map_location), problems
    except CheckpointError as exc:
        problems.append(str(exc))
    fallbacks = []
    for name in (PREVIOUS, BEST):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            data = load_checkpoint(path, map_location)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if "optimizer" not in data and not weights_only:  # weights only: it cannot resume a run
            continue
        fallbacks.append(((int(data["epoch"]), int(data.get("step", 0))), path, data))
    if not fallbacks:
        others = (
            f"; no readable {PREVIOUS} or {BEST} to fall back on"
            if len(problems) > 1 or any((run_dir / n).exists() for n in (PREVIOUS, BEST))
            else ""
        )
        raise CheckpointError(problems[0] + others)
    _, path, data = max(fallbacks, key=lambda item: item[0])
    return path, data, problems


def describe(data: dict[str, Any]) -> str:
    """Where a checkpoint stands, in words."""
    epoch, step = int(data["epoch"]), int(data.get("step", 0))
    return f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
