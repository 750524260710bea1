"""The spike pass: T steps, readout averaged over time. Inference under no_grad; BPTT under autograd."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .context import MemorySaving, PassState, use_pass
from .inputs import spike_input


def run_bptt(model: nn.Module, x: Tensor, T: int, intermediates: bool = False,
             memory: MemorySaving = MemorySaving()) -> tuple[Tensor, list[Tensor]]:
    """Spike pass with autograd through time (surrogate gradients); memory grows with T.

    Returns the time-averaged logits and, with ``intermediates``, the time mean of each stage's
    output with gradient (what ESD branches see under BPTT). At T = 1 this is the plain one-step
    (ANN) pass on the image, or on the mean frame of event input.
    """
    with use_pass(PassState("bptt", T, memory=memory)):
        return model.forward_intermediates(spike_input(x, T), keep=intermediates)


@torch.no_grad()
def run_spike(model: nn.Module, x: Tensor, T: int, memory: MemorySaving = MemorySaving()) -> Tensor:
    """Inference: logits ``[B, K]`` of the spike pass, no autograd, in the model's current mode."""
    with use_pass(PassState("spike", T, memory=memory)):
        return model(spike_input(x, T))


@torch.no_grad()
def run_spike_intermediates(model: nn.Module, x: Tensor, T: int,
                            memory: MemorySaving = MemorySaving()) -> tuple[Tensor, list[Tensor]]:
    """Inference with the time mean of every stage's output (e.g. a frozen teacher's features)."""
    with use_pass(PassState("spike", T, memory=memory)):
        return model.forward_intermediates(spike_input(x, T), keep=True)
