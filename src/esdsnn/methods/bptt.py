"""Backpropagation through time with surrogate gradients (memory grows with T)."""
from __future__ import annotations

from torch import Tensor

from ..passes.spike import run_bptt
from .base import TrainingMethod


class BPTT(TrainingMethod):
    """BPTT; with a ``DistillConfig`` it is ESD-BPTT (branches on the time mean of stage spikes)."""

    scales_loss_by_T = False

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return run_bptt(self.model, x, self.T, intermediates=self.branches is not None)
