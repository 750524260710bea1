"""The ANN twin trained with the same loop: the teacher for ANN-to-SNN distillation."""
from __future__ import annotations

from torch import Tensor, nn

from ..models.twin import to_relu_twin_
from ..passes.context import PassState, use_pass
from ..passes.inputs import rate_input
from .base import TrainingMethod


class ANN(TrainingMethod):
    """Converts the model to its ReLU twin (in place) and trains it on the time-averaged input."""

    scales_loss_by_T = False

    def __init__(self, model: nn.Module, T: int, **kwargs) -> None:
        super().__init__(to_relu_twin_(model), T, **kwargs)
        self.inference_T = 1  # no time: one step is the whole network

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with use_pass(PassState("spike", 1)):
            return self.model.forward_intermediates(rate_input(x), keep=self.branches is not None)
