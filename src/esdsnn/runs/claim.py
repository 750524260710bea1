"""Taking a run directory to write: its lock, what a new writer may find there, and the clean-up
before the first write.

- A folder that holds a checkpoint is a run: a new run is refused there (continue it with
  ``--resume``, which is offered only where there is a checkpoint to resume).
- A folder with a ``config.yaml`` but no checkpoint is a run killed during set-up, before its
  first checkpoint: it is started afresh in place, with a notice (by a new run and by
  ``--resume`` alike), never a dead end.
- Temporary files of saves that were killed (``.last.pt.<random>.tmp``) are removed once the
  writer holds the lock, so they cannot pile up over many interrupted sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from esdsnn.errors import ConfigError
from esdsnn.runs import files as runfiles
from esdsnn.runs.checkpoint import LAST, PREVIOUS
from esdsnn.runs.files import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from esdsnn.runs.lock import RunLock, refuse_if_busy

#: Files describing a run that never began, removed when it is started afresh in place.
STALE_FILES = (METRICS_FILE, SUMMARY_FILE)
PROBE_FILE = ".esdsnn-write-probe"

Notice = Callable[[str], None]


def resumable(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint a run can continue from (``last.pt`` or
    ``last.prev.pt``; ``best.pt`` holds weights only)."""
    return any((Path(run_dir) / name).is_file() for name in (LAST, PREVIOUS))


def stopped_before_first_checkpoint(run_dir: str | Path) -> bool:
    """A run's folder (its ``config.yaml``) without any checkpoint: killed during set-up."""
    path = Path(run_dir)
    return (path / CONFIG_FILE).is_file() and not any(path.glob("*.pt"))


def check_new_out(path: Path) -> None:
    """Refuse ``--out`` for a new run when it holds a run (or a run's weights), with the fix.
    A folder stopped before its first checkpoint passes (it is started afresh)."""
    if resumable(path):
        raise ConfigError(
            f"run directory {path} already holds a run; choose another --out, or continue it "
            f"with esdsnn train --resume {path}"
        )
    weights = sorted(p.name for p in path.glob("*.pt")) if path.is_dir() else []
    if weights:
        raise ConfigError(
            f"run directory {path} already holds a trained model ({', '.join(weights)}) and no "
            f"checkpoint to resume from; choose another --out (or start from its weights with "
            f"--init-from {path})"
        )


def check_out_early(out: Optional[str]) -> None:
    """Before a new run reads its data: refuse an ``--out`` that another process is writing or
    that holds a run (the lock taken later is what decides)."""
    if not out:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} exists and is not a directory")
    if path.is_dir():
        refuse_if_busy(path, fix="choose another --out")
        check_new_out(path)


@dataclass
class Claim:
    """A run directory taken by this process to write: its lock, and whether it was started
    afresh in place (a folder whose run stopped before its first checkpoint)."""

    run_dir: Path
    lock: RunLock
    afresh: bool = False


def claim_new(out: Optional[str], method: str, notice: Notice) -> Claim:
    """Create and lock the directory of a new run (``--out``, else ``runs/<time>-<method>``) and
    check, under the lock, that it holds no run."""
    run_dir = runfiles.new_run_dir(out, method)
    lock = RunLock(run_dir).acquire(fix="choose another --out")
    try:
        check_new_out(run_dir)
        afresh = stopped_before_first_checkpoint(run_dir)
        prepare(run_dir, notice, afresh)
    except BaseException:
        lock.release()
        raise
    return Claim(run_dir, lock, afresh)


def claim_existing(run_dir: Path, notice: Notice) -> Claim:
    """Lock the directory of a run to continue it (``--resume``); a run without a checkpoint is
    prepared to start afresh in place."""
    lock = RunLock(run_dir).acquire(
        fix=f"wait for it to finish, or stop it first; then continue with esdsnn train --resume {run_dir}"
    )
    try:
        afresh = stopped_before_first_checkpoint(run_dir)
        prepare(run_dir, notice, afresh)
    except BaseException:
        lock.release()
        raise
    return Claim(run_dir, lock, afresh)


def prepare(run_dir: Path, notice: Notice, afresh: bool) -> None:
    """The clean-up a writer does once it holds the lock: temporary files of killed saves, and,
    for a run started afresh in place, the files of the run that never began."""
    removed, size = remove_stale_temporaries(run_dir)
    if removed:
        notice(f"removed {removed} temporary file(s) ({size / 2**20:.1f} MiB) that interrupted saves left in {run_dir}")
    if afresh:
        for name in STALE_FILES:
            (run_dir / name).unlink(missing_ok=True)
        notice(
            f"{run_dir} holds a run that stopped before its first checkpoint (during set-up): starting it "
            f"afresh in place"
        )


def remove_stale_temporaries(run_dir: Path) -> tuple[int, int]:
    """Remove the temporary files of atomic writes that never completed (their writer was killed;
    :func:`esdsnn.atomic.atomic_write` names them ``.<file>.<random>.tmp``); returns how many, and
    their size. Only the holder of the lock may call this."""
    count = size = 0
    for path in [*run_dir.glob(".*.tmp"), run_dir / PROBE_FILE]:
        try:
            if path.is_file():
                bytes_ = path.stat().st_size
                path.unlink()
                count, size = count + 1, size + bytes_
        except OSError:
            continue
    return count, size


__all__ = [
    "Claim",
    "check_new_out",
    "check_out_early",
    "claim_existing",
    "claim_new",
    "prepare",
    "remove_stale_temporaries",
    "resumable",
    "stopped_before_first_checkpoint",
]
