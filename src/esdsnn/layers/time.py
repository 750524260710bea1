"""Helpers between time-major ``[T, B, ...]`` tensors and the folded ``[T·B, ...]`` activations.

Stateless layers (conv, linear, pooling, BN) run on all steps at once on the folded view; only
neurons loop over time. The number of folded steps comes from the running pass.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..passes.context import current_pass


def fold(x_seq: Tensor) -> Tensor:
    """``[T, B, ...] -> [T·B, ...]``."""
    return x_seq.flatten(0, 1)


def unfold(x: Tensor, steps: int) -> Tensor:
    """``[T·B, ...] -> [T, B, ...]``."""
    return x.view(steps, -1, *x.shape[1:])


def time_mean(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Mean over the folded time steps of the running pass: ``[T·B, ...] -> [B, ...]``.

    Compact (uint8) spikes of a no-grad pass are averaged in ``dtype`` (default: torch's default
    float type)."""
    steps = current_pass().steps
    if not x.is_floating_point():
        x = x.to(dtype or torch.get_default_dtype())
    return x if steps == 1 else unfold(x, steps).mean(0)


def add_residual(out: Tensor, shortcut: Tensor) -> Tensor:
    """``out + shortcut``, written into ``out`` when the result keeps its dtype.

    ``out`` must be a fresh activation nobody else holds (a BatchNorm output: autograd does not
    save it), so a residual block needs no third activation-sized tensor. ``shortcut`` may be
    compact uint8 spikes (promoted to ``out``'s float type).
    """
    if torch.result_type(out, shortcut) == out.dtype and out.shape == shortcut.shape:
        return out.add_(shortcut)
    return out + shortcut
