"""The ANN twin trained with the same loop: the teacher for ANN-to-SNN distillation."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..models.twin import to_relu_twin_
from ..passes.spike import run_bptt
from .base import TrainingMethod
from .registry import register_method


class ANN(TrainingMethod):
    """Converts the model to its ReLU twin (in place) and trains it on the time-averaged input
    (one step: the image, or the mean frame of event input)."""

    scales_loss_by_T = False

    def __init__(self, model: nn.Module, T: int, **kwargs) -> None:
        super().__init__(to_relu_twin_(model), T, **kwargs)

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return run_bptt(self.model, x, 1, self.branch_taps, memory=self.memory)


@register_method(
    "ann",
    description="the ReLU twin of the architecture (ANN teacher for kd)",
    training_pass="ANN (one step)",
    spiking=False,
    prepare_model=to_relu_twin_,
)
def ann(model: nn.Module, T: int, **common: Any) -> ANN:
    return ANN(model, T, **common)
