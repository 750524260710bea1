"""Convolution that runs the no-grad multi-step passes one time step at a time.

Conv layers are stateless, so the folded ``[T·B, C, H, W]`` input could go through in one call;
on CPU that call is slower than T calls of batch B (the working set of one step stays in cache:
measured 310 ms vs 225 ms for a 64→64 3×3 conv at T·B = 6·32, 32×32, one thread). Under autograd
(BPTT, the rate stage) the layer is a plain ``nn.Conv2d``.

It reads packed spikes (:class:`~esdsnn.neurons.spikes.PackedSpikes`) byte by byte: each step is
cast to the weight's type just before its convolution, so only one step is ever held as float.
An input whose steps are all equal (the direct-encoded image, :mod:`esdsnn.runtime.static`) is
convolved once, in every pass. In the no-grad passes a convolution on spikes runs in the pass's
``spike_dtype`` (bfloat16, :mod:`esdsnn.runtime.precision`; also under a bfloat16 autocast) with
weights cast once per optimiser step, and returns float32.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..neurons.spikes import PackedSpikes
from ..runtime.context import PassState, current_pass


def _low_precision(state: Optional[PassState], device: torch.device) -> Optional[torch.dtype]:
    """The type of no-grad convolutions on spikes: the pass's, or a bfloat16 autocast's."""
    if state is None or not state.no_grad:
        return None
    if state.spike_dtype is not None:
        return state.spike_dtype
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16:
        return torch.bfloat16
    return None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) with step-wise no-grad passes."""

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, PackedSpikes):
            x = x.packed
        state = current_pass(required=False)
        once = state.static.one_step(x) if state is not None and state.static is not None else None
        if once is not None:  # T equal steps (a direct-encoded image): convolve one, repeat it
            return state.static.repeat(self._conv(once))
        low = _low_precision(state, x.device) if not x.is_floating_point() else None
        stepwise = state is not None and state.no_grad and state.steps > 1
        if not stepwise or x.device.type != "cpu":
            return self._conv(x, low)
        chunks = x.chunk(state.steps)
        first = self._conv(chunks[0], low)
        out = torch.empty((x.shape[0], *first.shape[1:]), dtype=first.dtype, device=first.device)
        step = first.shape[0]
        out[:step].copy_(first)
        del first
        for t, chunk in enumerate(chunks[1:], start=1):
            out[t * step:(t + 1) * step].copy_(self._conv(chunk, low))
        return out

    def _conv(self, x: Tensor, low: Optional[torch.dtype] = None) -> Tensor:
        if low is not None:  # spikes (exact in any float type) against weights cast once
            weight, bias = self._cast_parameters(low)
            with torch.autocast(x.device.type, enabled=False):
                return self._conv_forward(x.to(low), weight, bias).to(self.weight.dtype)
        if not x.is_floating_point():  # packed spikes
            x = x.to(self.weight.dtype)
        return super().forward(x)

    def _cast_parameters(self, dtype: torch.dtype) -> tuple[Tensor, Optional[Tensor]]:
        """Weight and bias in ``dtype``, cast again only after they change (an optimiser step)."""
        key = (dtype, self.weight.data_ptr(), self.weight._version,
               None if self.bias is None else (self.bias.data_ptr(), self.bias._version))
        cached = self.__dict__.get("_cast_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                bias = None if self.bias is None else self.bias.to(dtype)
                cached = (key, self.weight.to(dtype), bias)
            self.__dict__["_cast_cache"] = cached
        return cached[1], cached[2]
