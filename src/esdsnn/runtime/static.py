"""Activations whose T folded steps are known to be equal, computed once instead of T times.

A direct-encoded image is the same at every step, so the first convolution of a T-step pass sees
T identical copies of one batch: its output (a convolution treats samples independently) and the
BatchNorm statistics over them (the mean and biased variance of T equal copies are those of one)
equal those of a single copy. :class:`StaticSteps` remembers, for the running pass, which folded
tensors ``[T·B, ...]`` are such repeats and their one-step value ``[B, ...]``; the step-aware
layers (:class:`~esdsnn.layers.Conv2d`, the rate-aware BatchNorms) look their input up and compute
on one copy. Under autograd the repeat is an ordinary ``Tensor.repeat``, whose backward sums the T
copies' gradients: that is exactly the gradient of the general path, so BPTT is unchanged too.

An entry holds only while the folded tensor lives and is not modified in place (its version is
checked), so a layer that writes into it (a residual add) simply loses the shortcut.
"""

from __future__ import annotations

import weakref
from typing import Optional

from torch import Tensor


class StaticSteps:
    """The repeated activations of one pass (see the module notes)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._entries: dict[int, tuple[weakref.ref, int, Tensor]] = {}
        self.hits = 0  # how many layers computed on one copy (tests read it)

    def mark(self, folded: Tensor, one_step: Tensor) -> Tensor:
        """Record that ``folded`` is ``steps`` copies of ``one_step``; returns ``folded``."""
        if folded.shape[0] != self.steps * one_step.shape[0] or folded.shape[1:] != one_step.shape[1:]:
            raise ValueError(f"{tuple(folded.shape)} is not {self.steps} copies of {tuple(one_step.shape)}")
        key = id(folded)
        self._entries[key] = (weakref.ref(folded), folded._version, one_step)
        weakref.finalize(folded, self._entries.pop, key, None)
        return folded

    def repeat(self, one_step: Tensor) -> Tensor:
        """``steps`` copies of ``one_step`` folded into ``[steps·B, ...]``, marked as such."""
        return self.mark(one_step.repeat(self.steps, *([1] * (one_step.dim() - 1))), one_step)

    def one_step(self, x: Tensor) -> Optional[Tensor]:
        """The one-step value of ``x`` if ``x`` is a known, unmodified repeat; else ``None``."""
        entry = self._entries.get(id(x))
        if entry is None or entry[0]() is not x or entry[1] != x._version:
            return None
        self.hits += 1
        return entry[2]


__all__ = ["StaticSteps"]
