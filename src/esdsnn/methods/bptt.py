"""Backpropagation through time with surrogate gradients (memory grows with T)."""
from __future__ import annotations

from typing import Union

from torch import Tensor, nn

from ..passes.spike import run_bptt
from .base import TrainingMethod
from .registry import register_method


class BPTT(TrainingMethod):
    """BPTT; with a ``DistillConfig`` it is ESD-BPTT (branches on the time mean of stage spikes)."""

    scales_loss_by_T = False

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return run_bptt(self.model, x, self.T, intermediates=self.branches is not None, memory=self.memory)


@register_method("bptt", description="BPTT with surrogate gradients (baseline; memory grows with T)",
                 training_pass="BPTT")
def bptt(model: nn.Module, T: int, *, loss_scale: Union[str, float] = "auto") -> BPTT:
    return BPTT(model, T, loss_scale=loss_scale)
