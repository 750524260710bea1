"""Rate-based backpropagation: a no-grad spike stage that records, then one pass on rates."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .context import MemorySaving, PassState, use_pass
from .inputs import rate_input, spike_input
from .trace import Trace


@torch.no_grad()
def run_spike_stage(model: nn.Module, x: Tensor, T: int,
                    memory: MemorySaving = MemorySaving()) -> tuple[Tensor, Trace]:
    """T steps without autograd; every LIF records (rate, eligibility), every BN its statistics.

    Returns the spike-pass logits (free training accuracy) and the trace.
    """
    trace = Trace(T)
    with use_pass(PassState("spike_stage", T, trace, memory)):
        logits = model(spike_input(x, T))
    return logits, trace


def run_rate_stage(model: nn.Module, x: Tensor, trace: Trace, intermediates: bool = False,
                   memory: MemorySaving = MemorySaving()) -> tuple[Tensor, list[Tensor]]:
    """One differentiable step on the time-averaged input; cost independent of T."""
    with use_pass(PassState("rate_stage", 1, trace, memory)):
        return model.forward_intermediates(rate_input(x), keep=intermediates)
