"""What a training run tells its user when it cannot go on: a diverged loss, memory that ran out, a
disk that filled up. Each is one line naming the cause, the fix, and where the work is kept
(continue with ``--resume`` only where there is a checkpoint to continue from)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

from esdsnn.config import TrainConfig
from esdsnn.errors import EsdsnnError, OutOfMemory, RunNotWritable, TrainingDiverged, brief, out_of_memory
from esdsnn.methods import MethodSpec
from esdsnn.runs.claim import resumable

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def next_step(run_dir: Path) -> str:
    """The command that carries on with ``run_dir``: a resume where there is a checkpoint, else a
    fresh start in place (which ``--resume`` does for a run without one)."""
    verb = "continue" if resumable(run_dir) else "start it again"
    return f"{verb} with esdsnn train --resume {run_dir}"


def kept(run_dir: Optional[Path], saved: Optional[str]) -> str:
    """Where the work stands, and the command that carries on with it."""
    if run_dir is None:
        return "nothing was written yet"
    if resumable(run_dir):
        state = f" (it holds {saved})" if saved else ""
        return f"its last checkpoint is intact{state}: {next_step(run_dir)}"
    return f"no checkpoint was written yet: {next_step(run_dir)}"


def diverged_error(
    run_dir: Path, epoch: int, step: int, lr: float, what: str, precision: str = "32"
) -> TrainingDiverged:
    last = run_dir / "last.pt"
    kept_line = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
    precision = "; with --precision 16-mixed try bf16-mixed or 32" if precision == "16-mixed" else ""
    return TrainingDiverged(
        f"training diverged at epoch {epoch}, step {step}: {what} (lr {lr:g}); lower --lr, or check "
        f"the data for NaN/inf or unnormalised values{precision}; {kept_line}"
    )


def training_failure(
    exc: BaseException, run_dir: Optional[Path], config: TrainConfig, spec: MethodSpec, saved: Optional[str] = None
) -> Optional[EsdsnnError]:
    """The one-line error for ``exc`` raised while a run set up or trained, or None when it is
    not one of the failures named here (out of memory, a run directory that stopped taking
    writes)."""
    if out_of_memory(exc):
        smaller = f"use a smaller --batch-size (now {config.optim.batch_size}) or --T (now {config.T})"
        if spec.training_pass == "BPTT":  # memory grows with T; RateBP's stays flat
            smaller += ", or a RateBP method (--method esd or ratebp), whose memory does not grow with T"
        return OutOfMemory(f"out of memory ({brief(exc, 160)}); {smaller}; {kept(run_dir, saved)}")
    if not isinstance(exc, OSError) or run_dir is None:
        return None
    target = Path(exc.filename).resolve() if isinstance(exc.filename, (str, Path)) else None
    inside = target is None or run_dir.resolve() in (target, *target.parents)
    if exc.errno in _DISK_FULL and inside:
        return RunNotWritable(
            f"no space left on the device of {run_dir} ({exc.strerror or brief(exc)}); free some "
            f"space, then {next_step(run_dir)}"
        )
    if exc.errno in _UNWRITABLE and target is not None and inside:
        return RunNotWritable(
            f"cannot write {target} ({exc.strerror}); make {run_dir} writable, then {next_step(run_dir)}"
        )
    return None


__all__ = ["diverged_error", "kept", "next_step", "training_failure"]
