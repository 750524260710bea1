"""Rate-based backpropagation: no-grad spike stage, then one backward pass through rates."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..passes.ratebp import run_rate_stage, run_spike_stage
from .base import TrainingMethod, make_rate_safe, require_neurons, trace_firing_rate
from .registry import register_method


class LearnableDecayUnderRateBP(ConfigError):
    """A model with a learnable decay given to a RateBP-based method (the CLI names its flags instead)."""


class RateBP(TrainingMethod):
    """RateBP; with a ``DistillConfig`` it is ESD (branches on the rate-stage stage outputs)."""

    scales_loss_by_T = True

    def __init__(self, model: nn.Module, T: int, **kwargs) -> None:
        learnable = [n.removesuffix(".decay_logit") for n, p in model.named_parameters() if n.endswith("decay_logit")]
        if learnable:
            more = f" and {len(learnable) - 3} more" if len(learnable) > 3 else ""
            raise LearnableDecayUnderRateBP(
                f"learnable_decay needs a BPTT-based method: RateBP's eligibilities give no gradient to the decay "
                f"of LIF layer(s) {', '.join(learnable[:3])}{more}; use create_method('esd-bptt', ...) (or 'bptt'), or "
                f"fix the decay: build the LIFs with learnable_decay=False (a converted SpikingJelly model: "
                f"esdsnn.from_spikingjelly(model, learnable_decay=False))"
            )
        require_neurons(model, "RateBP")
        make_rate_safe(model)
        super().__init__(model, T, **kwargs)

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        _, trace = run_spike_stage(self.model, x, self.T, memory=self.memory)
        self.step_firing_rate = trace_firing_rate(trace)
        return run_rate_stage(self.model, x, trace, self.branch_taps, memory=self.memory)


@register_method(
    "ratebp", description="rate-based backpropagation (baseline)", training_pass="RateBP", scales_loss_by_T=True
)
def ratebp(model: nn.Module, T: int, **common: Any) -> RateBP:
    return RateBP(model, T, **common)
