"""Helpers between time-major ``[T, B, ...]`` tensors and the folded ``[T·B, ...]`` activations.

Stateless layers (conv, linear, pooling, BN) run on all steps at once on the folded view; only
neurons loop over time. The number of folded steps comes from the running pass.
"""
from __future__ import annotations

from torch import Tensor

from ..passes.context import current_pass


def fold(x_seq: Tensor) -> Tensor:
    """``[T, B, ...] -> [T·B, ...]``."""
    return x_seq.flatten(0, 1)


def unfold(x: Tensor, steps: int) -> Tensor:
    """``[T·B, ...] -> [T, B, ...]``."""
    return x.view(steps, -1, *x.shape[1:])


def time_mean(x: Tensor) -> Tensor:
    """Mean over the folded time steps of the running pass: ``[T·B, ...] -> [B, ...]``."""
    steps = current_pass().steps
    return x if steps == 1 else unfold(x, steps).mean(0)
