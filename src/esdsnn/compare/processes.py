"""Training runs as child processes: their output echoed line by line, their own peak memory
(``os.wait4``), and a Ctrl-C that reaches the child (which saves and exits) before it reaches us."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

Echo = Callable[[str], None]


@dataclass
class ChildResult:
    returncode: int
    peak_rss_bytes: Optional[int]
    last_lines: list[str] = field(default_factory=list)
    interrupted: bool = False  # a Ctrl-C reached us while the child ran

    @property
    def stopped(self) -> bool:
        return self.interrupted or self.returncode == 130


def _maxrss_bytes(rusage: Any) -> int:
    peak = int(rusage.ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class _DeferredInterrupt:
    """While installed (main thread only), Ctrl-C just sets ``hit`` instead of raising, so that we
    keep reading the child's output and reap it however the signal lands."""

    def __init__(self) -> None:
        self.hit = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[_DeferredInterrupt]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            self.hit = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def run_child(command: Sequence[str], echo: Echo, prefix: str = "    ") -> ChildResult:
    """Run ``command``, echoing its output lines; return its exit code and peak RSS (``wait4``).

    A Ctrl-C reaches the child too (same process group): training saves a checkpoint and exits.
    Here it only marks the result ``interrupted`` once the child has ended (the caller decides).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: list[str] = []
    peak: Optional[int] = None
    with _DeferredInterrupt().installed() as interrupt:
        proc = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
        )
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = ([*tail, line])[-20:]
                echo(prefix + line)
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            peak = _maxrss_bytes(usage)
        else:  # pragma: no cover - no wait4 (Windows): no per-child peak
            proc.wait()
    return ChildResult(int(proc.returncode), peak, tail, interrupt.hit)


def import_baseline_bytes(python: str = sys.executable) -> Optional[int]:
    """Peak RSS of a process that only imports torch and the esdsnn training code."""
    if not hasattr(os, "wait4"):  # pragma: no cover
        return None
    result = run_child([python, "-c", "import torch, esdsnn, esdsnn.train"], echo=lambda line: None)
    return result.peak_rss_bytes if result.returncode == 0 else None


__all__ = ["ChildResult", "import_baseline_bytes", "run_child"]
