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
- ``best.pt``: the state after the epoch with the best test accuracy so far.

Resuming (:func:`load_latest`) takes ``last.pt``; if it is missing, truncated or corrupt it says
so in one line and takes the most advanced readable one of ``last.prev.pt`` and ``best.pt``.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from esdsnn.errors import CheckpointError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LAST = "last.pt"
PREVIOUS = "last.prev.pt"
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


# ---- writing and reading -----------------------------------------------------------------------
def save_checkpoint(path: str | Path, payload: dict[str, Any], *, keep_previous: str | Path | None = None) -> Path:
    """Write ``payload`` (plus ``format_version``) to ``path`` atomically; return the path.

    With ``keep_previous``, an existing ``path`` is first renamed to that name (after the new file
    is safely on disk), so the state before this one stays available.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.is_file():
            os.replace(path, keep_previous)
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
        if isinstance(exc, pickle.UnpicklingError):  # torch's text would advise weights_only=False
            reason = "not a torch file of tensors and plain values; esdsnn never unpickles other objects"
        else:
            reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({reason})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise CheckpointError(f"{path} is not an esdsnn checkpoint")
    if data["format_version"] not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {data['format_version']}, this esdsnn reads "
            f"version {FORMAT_VERSION}"
        )
    missing = [k for k in ("model", "config", "epoch") if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return data


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any], list[str]]:
    """The checkpoint to resume ``run_dir`` from: ``(path, data, problems)``.

    ``last.pt`` when it reads; otherwise the most advanced (epoch, step) readable one of
    ``last.prev.pt`` and ``best.pt``, with ``problems`` holding one line per file that did not
    read. Raises :class:`CheckpointError` (naming ``last.pt``'s problem) when none reads.
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
        fallbacks.append(((int(data["epoch"]), int(data.get("step", 0))), path, data))
    if not fallbacks:
        others = f"; no readable {PREVIOUS} or {BEST} to fall back on" if len(problems) > 1 or any(
            (run_dir / n).exists() for n in (PREVIOUS, BEST)) else ""
        raise CheckpointError(problems[0] + others)
    _, path, data = max(fallbacks, key=lambda item: item[0])
    return path, data, problems


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
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
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
        np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                             npy["has_gauss"], npy["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda][: torch.cuda.device_count()])


def describe(data: dict[str, Any]) -> str:
    """Where a checkpoint stands, in words."""
    epoch, step = int(data["epoch"]), int(data.get("step", 0))
    return f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
