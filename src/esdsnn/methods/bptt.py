"""Backpropagation through time with surrogate gradients (memory grows with T)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..passes.spike import run_bptt
from .base import SpikeCounter, TrainingMethod, require_neurons
from .registry import register_method


class BPTT(TrainingMethod):
    """BPTT; with a ``DistillConfig`` it is ESD-BPTT (branches on the time mean of stage spikes)."""

    scales_loss_by_T = False

    def __init__(self, model: nn.Module, T: int, **kwargs: Any) -> None:
        require_neurons(model, "BPTT")
        super().__init__(model, T, **kwargs)

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with SpikeCounter(self.model) as spikes:
            out = run_bptt(self.model, x, self.T, self.branch_taps, memory=self.memory)
        self.step_firing_rate = spikes.rate()
        return out


@register_method(
    "bptt", description="BPTT with surrogate gradients (baseline; memory grows with T)", training_pass="BPTT"
)
def bptt(model: nn.Module, T: int, **common: Any) -> BPTT:
    return BPTT(model, T, **common)
