"""Stopping a run cleanly: the first Ctrl-C or SIGTERM, or a caller's own stop signal, ends the
run after the current step with a checkpoint."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, Optional, Protocol


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


class InterruptFlag:
    """Set by the first Ctrl-C (SIGINT) or SIGTERM: the loop then saves a checkpoint after the
    current step and returns. A second Ctrl-C interrupts at once; a second SIGTERM terminates."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: Optional[int] = None

    def is_set(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[InterruptFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals can only be caught in the main thread
            return
        previous: dict[int, Any] = {s: signal.getsignal(s) for s in self.SIGNALS}  # (read by number)

        def handler(signum: int, frame: Any) -> None:
            if self.signum is None:
                self.signum = signum
            before = previous[signum]
            if signum == signal.SIGINT and not callable(before):
                before = signal.default_int_handler
            signal.signal(signum, before if before is not None else signal.SIG_DFL)

        for s in self.SIGNALS:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for number, before in previous.items():
                signal.signal(number, before if before is not None else signal.SIG_DFL)


class EitherStop:
    """Set when any of the given signals is."""

    def __init__(self, *flags: Optional[StopSignal]) -> None:
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


__all__ = ["EitherStop", "InterruptFlag", "StopSignal"]
