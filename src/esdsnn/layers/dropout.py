"""Dropout that keeps one mask per sample over all time steps, and the same mask in both RateBP
stages.

``nn.Dropout`` on folded activations draws a new mask for every step, and RateBP's rate stage
would draw yet another one than the spike stage whose rates it uses, so its gradients would
belong to another network. This layer draws, in training, one mask per sample (shared by its T
steps, as SpikingJelly's multi-step dropout does), records it in the spike stage and applies the
recorded mask in the rate stage. In evaluation it is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..neurons.spikes import unpack_spikes
from ..runtime.context import current_pass


class Dropout(nn.Module):
    """Dropout with probability ``p``, one mask per sample for all its steps (see module notes)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def _draw(self, x: Tensor, batch: int) -> Tensor:
        keep = torch.rand((batch, *x.shape[1:]), device=x.device) >= self.p
        return keep.to(x.dtype) / (1.0 - self.p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        state = current_pass()
        x = unpack_spikes(x)
        if state.kind == "rate_stage":
            assert state.trace is not None  # the RateBP stages carry a trace (PassState checks)
            return x * state.trace.mask(self)
        batch = x.shape[0] // state.steps
        mask = self._draw(x, batch)
        if state.kind == "spike_stage":
            assert state.trace is not None
            state.trace.record_mask(self, mask)
        return (x.view(state.steps, batch, *x.shape[1:]) * mask).flatten(0, 1)
