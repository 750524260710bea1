"""Helpers between time-major ``[T, B, ...]`` tensors and the folded ``[T·B, ...]`` activations.

Stateless layers (conv, linear, pooling, BN) run on all steps at once on the folded view; only
neurons loop over time. The number of folded steps comes from the running pass.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor

from ..neurons.spikes import PackedSpikes
from ..runtime.context import current_pass


def fold(x_seq: Tensor) -> Tensor:
    """``[T, B, ...] -> [T·B, ...]``."""
    return x_seq.flatten(0, 1)


def unfold(x: Tensor, steps: int) -> Tensor:
    """``[T·B, ...] -> [T, B, ...]``."""
    return x.view(steps, -1, *x.shape[1:])


def time_mean(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Mean over the folded time steps of the running pass: ``[T·B, ...] -> [B, ...]``.

    Packed spikes are averaged in ``dtype`` (default: their float type)."""
    steps = current_pass().steps
    if isinstance(x, PackedSpikes):
        x = x.packed.to(dtype or x.float_dtype)
    return x if steps == 1 else unfold(x, steps).mean(0)


def add_residual(out: Tensor, shortcut: Tensor) -> Tensor:
    """``out + shortcut``, written into ``out`` when the running pass allows it
    (``MemorySaving.inplace_residual``) and the result keeps ``out``'s dtype.

    ``out`` must be a fresh activation nobody else holds (a BatchNorm output: autograd does not
    save it), so a residual block needs no third activation-sized tensor. ``shortcut`` may be
    packed spikes: their bytes are added directly (promoted to ``out``'s float type). Under
    ``torch.fx`` tracing (NIR export) it is a plain add.
    """
    if isinstance(out, torch.fx.Proxy):  # traced for export: a residual add, nothing more
        return out + shortcut
    if isinstance(shortcut, PackedSpikes):
        shortcut = shortcut.packed
    state = current_pass(required=False)
    inplace = state is None or state.memory.inplace_residual
    if inplace and torch.result_type(out, shortcut) == out.dtype and out.shape == shortcut.shape:
        return out.add_(shortcut)
    return out + shortcut
