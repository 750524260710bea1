"""The spike pass: T steps, readout averaged over time. Inference under no_grad; BPTT under autograd."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..runtime.context import MemorySaving, PassState, use_pass
from ..runtime.precision import spike_dtype_for
from .inputs import static_spike_input
from .readout import run_model


def run_bptt(
    model: nn.Module, x: Tensor, T: int, features: Sequence[str] = (), memory: MemorySaving = MemorySaving()
) -> tuple[Tensor, list[Tensor]]:
    """Spike pass with autograd through time (surrogate gradients); memory grows with T.

    Returns the time-averaged logits and the time mean, with gradient, of the outputs of the
    submodules named in ``features`` (what ESD branches see under BPTT). At T = 1 this is the
    plain one-step (ANN) pass on the image, or on the mean frame of event input.
    """
    folded, static = static_spike_input(x, T, memory.static_input)
    with use_pass(PassState("bptt", T, memory=memory, static=static)):
        return run_model(model, folded, T, features)


@torch.no_grad()
def run_spike(model: nn.Module, x: Tensor, T: int, memory: MemorySaving = MemorySaving()) -> Tensor:
    """Inference: logits ``[B, K]`` of the spike pass, no autograd, in the model's current mode."""
    folded, static = static_spike_input(x, T, memory.static_input)
    with use_pass(PassState("spike", T, memory=memory, static=static, spike_dtype=spike_dtype_for(x.device))):
        return run_model(model, folded, T)[0]


@torch.no_grad()
def run_spike_intermediates(
    model: nn.Module, x: Tensor, T: int, features: Sequence[str], memory: MemorySaving = MemorySaving()
) -> tuple[Tensor, list[Tensor]]:
    """Inference with the time mean of named submodules' outputs (e.g. a frozen teacher's features)."""
    folded, static = static_spike_input(x, T, memory.static_input)
    with use_pass(PassState("spike", T, memory=memory, static=static, spike_dtype=spike_dtype_for(x.device))):
        return run_model(model, folded, T, features)
