"""An example training method, written the way a new method is added to esdsnn: this one file.

BPTT with label smoothing on the main head. Nothing else in esdsnn knows its name: the config,
the CLI, the loop, evaluation and the report learn what they need from its registration.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from esdsnn.methods import MethodOutput, register_method
from esdsnn.methods.bptt import BPTT

NAME = "example-smooth"


class LabelSmoothedBPTT(BPTT):
    def forward(self, x: Tensor, y: Tensor) -> MethodOutput:
        logits, _ = self.training_pass(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        acc = (logits.detach().argmax(-1) == y).float().mean()
        return MethodOutput(loss * self.loss_scale, logits, {"loss": float(loss.detach()), "acc_main": float(acc)})


@register_method(NAME, description="BPTT with label smoothing 0.1 (an example)", training_pass="BPTT")
def example(model: nn.Module, T: int, **common) -> LabelSmoothedBPTT:
    return LabelSmoothedBPTT(model, T, **common)  # common: loss_scale, input_shape
