"""Progress within an epoch: a tqdm bar on a terminal, timed lines where no terminal is.

A cluster job writes its output to a file, where a bar is either invisible or a flood of
carriage returns; there, one plain line every ``log_every`` seconds says where the run is:
epoch, step/total, loss, accuracy, samples/s and the time left in the epoch and in the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Optional, TextIO

from tqdm import tqdm

Echo = Callable[[str], None]


def duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``4000`` → ``1h06m``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


class EpochProgress:
    """What one epoch shows while it runs. ``update`` after every step; ``close`` at the end.

    ``bar``: draw tqdm's bar (the caller decides: a terminal, progress wanted, rank 0);
    otherwise, with ``log_every`` > 0, ``echo`` gets a line at most every ``log_every`` seconds.
    ``epochs_left`` (after this one) makes the ETA cover the whole run.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        steps: int,
        start_step: int,
        *,
        bar: bool,
        log_every: float,
        echo: Echo,
        epochs_left: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.echo, self.log_every, self.epochs_left, self.clock = echo, log_every, epochs_left, clock
        self.started = self.last_line = clock()
        self.start_step = start_step
        self.samples = 0
        self.bar = (
            tqdm(
                total=steps,
                initial=start_step,
                desc=f"epoch {epoch}/{epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
            )
            if bar
            else None
        )

    def update(self, step: int, samples: int, loss: float, acc: float) -> None:
        """``step`` batches of the epoch are done; ``samples`` were trained in the last one."""
        self.samples += samples
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", refresh=False)
            return
        now = self.clock()
        if self.log_every > 0 and now - self.last_line >= self.log_every and step < self.steps:
            self.last_line = now
            self.echo(self.line(step, loss, acc, now))

    def line(self, step: int, loss: float, acc: float, now: Optional[float] = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        per_step = elapsed / max(step - self.start_step, 1)
        epoch_left = per_step * (self.steps - step)
        run_left = epoch_left + per_step * self.steps * self.epochs_left
        return (
            f"epoch {self.epoch}/{self.epochs}  step {step}/{self.steps}  loss {loss:.4f}  train {acc:.2%}  "
            f"{self.samples / elapsed:.0f} samples/s  ETA epoch {duration(epoch_left)}, run {duration(run_left)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class FirstStepsTimer:
    """Times the first steps of a session for one estimate of the run's length: ``tick`` after
    every step returns the seconds per step once, after ``steps`` steps or ``seconds`` seconds
    (the first step, which warms up, is not counted), and None otherwise."""

    def __init__(self, steps: int = 10, seconds: float = 10.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.steps, self.seconds, self.clock = steps, seconds, clock
        self.times: list[float] = []
        self.done = False

    def tick(self) -> Optional[float]:
        if self.done:
            return None
        self.times.append(self.clock())
        counted = len(self.times) - 1
        if counted >= 1 and (counted >= self.steps or self.times[-1] - self.times[0] >= self.seconds):
            self.done = True
            return (self.times[-1] - self.times[0]) / counted
        return None


class ThreadGuard:
    """Drops to one CPU thread when steps slow down: two intra-op threads on two cores become many
    times slower as soon as another job takes a core. ``check`` after every step with its
    duration; the reference is the first steps' time; returns a line to print when it acts."""

    def __init__(self, window: int = 20, factor: float = 2.5) -> None:
        self.window, self.factor = window, factor
        self.reference: Optional[float] = None
        self.recent: list[float] = []
        self.done = False

    def check(self, step_seconds: float) -> Optional[str]:
        import statistics

        import torch

        if self.done or self.reference is None or torch.get_num_threads() <= 1:
            return None
        self.recent = ([*self.recent, step_seconds])[-self.window :]
        if len(self.recent) < self.window:
            return None
        slow = statistics.median(self.recent)
        if slow <= self.factor * self.reference:
            return None
        self.done = True
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        return (
            f"steps slowed from {self.reference:.3g} s to {slow:.3g} s (another job on the cores?): "
            f"{before} -> 1 thread for the rest of this session"
        )


class StepWatch:
    """What the session checks after every step: the one estimate of the run's length after the
    first steps, and (``guard``) the drop to one thread when steps slow down. ``after_step``
    returns the lines to print."""

    def __init__(self, guard: bool) -> None:
        self.timer = FirstStepsTimer()
        self.guard = ThreadGuard() if guard else None

    def after_step(self, seconds: float, steps: int, steps_left: int, epochs_after: int) -> list[str]:
        lines = []
        per_step = self.timer.tick()
        if per_step is not None:
            lines.append(estimate_line(per_step, steps, steps_left, epochs_after))
            if self.guard is not None:
                self.guard.reference = per_step
        if self.guard is not None:
            line = self.guard.check(seconds)
            if line:
                lines.append(line)
        return lines


def estimate_line(per_step: float, steps: int, steps_left: int, epochs_after: int) -> str:
    """The estimate printed after the first steps: per epoch and for the rest of the run."""
    left = per_step * (steps_left + steps * epochs_after)
    return (
        f"estimate from the first steps: {per_step:.3g} s/step, {duration(per_step * steps)} per epoch of "
        f"{steps} steps, {duration(left)} of training left (evaluation not included)"
    )


def is_terminal(stream: TextIO = sys.stderr) -> bool:
    """Whether ``stream`` is an interactive terminal (where tqdm draws its bar)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


__all__ = ["EpochProgress", "FirstStepsTimer", "StepWatch", "ThreadGuard", "duration", "estimate_line", "is_terminal"]
