"""Rate-based backpropagation: a no-grad spike stage that records, then one pass on rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..runtime.context import MemorySaving, PassState, use_pass
from ..runtime.precision import spike_dtype_for
from ..runtime.trace import Trace
from .inputs import rate_input, static_spike_input
from .readout import run_model


@torch.no_grad()
def run_spike_stage(model: nn.Module, x: Tensor, T: int, memory: MemorySaving = MemorySaving()) -> tuple[Tensor, Trace]:
    """T steps without autograd; every LIF records (rate, eligibility), every BN its statistics.

    Returns the spike-pass logits (free training accuracy) and the trace.
    """
    trace = Trace(T)
    folded, static = static_spike_input(x, T, memory.static_input)
    with use_pass(PassState("spike_stage", T, trace, memory, static, spike_dtype_for(x.device))):
        logits, _ = run_model(model, folded, T)
    # Under an autocast, torch < 2.5 caches the low-precision copies of the weights made here, without
    # grad, and hands them to the rate stage: its weights would then get no gradient. Drop them.
    if torch.is_autocast_enabled(x.device.type):
        torch.clear_autocast_cache()
    return logits, trace


def run_rate_stage(
    model: nn.Module, x: Tensor, trace: Trace, features: Sequence[str] = (), memory: MemorySaving = MemorySaving()
) -> tuple[Tensor, list[Tensor]]:
    """One differentiable step on the time-averaged input, with the outputs of the submodules
    named in ``features``; cost independent of T."""
    with use_pass(PassState("rate_stage", 1, trace, memory)):
        return run_model(model, rate_input(x), 1, features)
