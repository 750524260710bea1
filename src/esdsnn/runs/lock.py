"""One writer per run directory: an advisory lock held for the life of a training process.

Two processes writing one run (``train --resume DIR`` while DIR still trains) would interleave
their rows in ``metrics.csv`` and overwrite each other's checkpoints. The writer therefore holds
an exclusive ``flock`` on ``DIR/writer.lock`` from before its first write until it ends. The
operating system drops the lock when the process dies, however it dies (SIGKILL included), so a
lock is never stale; the file itself stays behind and names the last holder (pid, host, start
time) for the message a second writer gets.

Readers (``eval``, ``report``, ``export``) never take the lock; they ask :func:`holder` whether a
writer is at work, to say that what they read is an intermediate checkpoint. Under torchrun only
rank 0 writes, so only rank 0 takes the lock. Where ``fcntl`` does not exist (Windows) nothing is
locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from esdsnn.errors import ConfigError, RunInUse

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no module on Windows: the lock is then a no-op

LOCK_FILE = "writer.lock"
#: How long a writer retries before it concludes the lock is held: a reader's probe holds a shared
#: lock for microseconds, which must not turn a writer away.
RETRY_S = 1.0


@dataclass(frozen=True)
class Holder:
    """The process that holds (or last held) a run's lock, as its lock file names it."""

    pid: Optional[int] = None
    host: Optional[str] = None
    started: Optional[str] = None
    command: Optional[str] = None

    def describe(self) -> str:
        if self.pid is None:
            return "a process that has not written its name yet"
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        since = f", since {self.started}" if self.started else ""
        return f"pid {self.pid}{where}{since}"


def _read_holder(fd: int) -> Holder:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    pid = data.get("pid")
    return Holder(pid if isinstance(pid, int) else None, data.get("host"), data.get("started"), data.get("command"))


class RunLock:
    """The writer's lock on one run directory (a context manager; :meth:`acquire` / :meth:`release`)."""

    def __init__(self, run_dir: str | Path, what: str = "run directory") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.what = what
        self.fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, fix: str = "") -> RunLock:
        """Take the lock, or raise :class:`RunInUse` naming the holder (and ``fix``, what to do)."""
        if fcntl is None or self.fd is not None:  # pragma: no cover - Windows
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ConfigError(
                f"cannot write to {self.what} {self.run_dir}: {exc.strerror or exc}; make it writable, "
                f"or choose another folder"
            ) from None
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUse(busy_message(self.run_dir, holder, self.what, fix)) from None
            except OSError:  # a file system without locks: carry on unlocked
                os.close(fd)
                return self
        self.fd = fd
        record = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv),
            }
        )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode("utf-8") + b"\n", 0)
        except OSError:  # the name is for messages only; the lock is what counts
            pass
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: str | Path) -> Optional[Holder]:
    """The process writing ``run_dir`` now, or None when no writer holds its lock. Takes nothing:
    a shared lock is tried and dropped at once."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def busy_message(run_dir: Path, who: Holder, what: str = "run directory", fix: str = "") -> str:
    """The one line a second writer gets."""
    fix = fix or f"wait for it to finish, or stop it (kill {who.pid or 'PID'}) first"
    return (
        f"{what} {run_dir} is being written by another esdsnn process ({who.describe()}); a run has one writer: {fix}"
    )


def refuse_if_busy(run_dir: str | Path, what: str = "run directory", fix: str = "") -> None:
    """Raise :class:`RunInUse` when a writer holds ``run_dir`` (a check before slower work; the
    lock taken later is what decides)."""
    who = holder(run_dir)
    if who is not None:
        raise RunInUse(busy_message(Path(run_dir), who, what, fix))


__all__ = ["LOCK_FILE", "Holder", "RunLock", "busy_message", "holder", "refuse_if_busy"]
