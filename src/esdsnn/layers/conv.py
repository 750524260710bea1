"""Convolution that runs the no-grad multi-step passes one time step at a time.

Conv layers are stateless, so the folded ``[T·B, C, H, W]`` input could go through in one call;
on CPU that call is slower than T calls of batch B (the working set of one step stays in cache:
measured 310 ms vs 225 ms for a 64→64 3×3 conv at T·B = 6·32, 32×32, one thread). Under autograd
(BPTT, the rate stage) the layer is a plain ``nn.Conv2d``.

It reads packed spikes (:class:`~esdsnn.neurons.spikes.PackedSpikes`) byte by byte: each step is
cast to the weight's type just before its convolution, so only one step is ever held as float.
An input whose steps are all equal (the direct-encoded image, :mod:`esdsnn.runtime.static`) is
convolved once, in every pass.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..runtime.context import current_pass
from ..neurons.spikes import PackedSpikes


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) with step-wise no-grad passes."""

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, PackedSpikes):
            x = x.packed
        state = current_pass(required=False)
        once = state.static.one_step(x) if state is not None and state.static is not None else None
        if once is not None:  # T equal steps (a direct-encoded image): convolve one, repeat it
            return state.static.repeat(self._conv(once))
        stepwise = state is not None and state.no_grad and state.steps > 1
        if not stepwise or x.device.type != "cpu":
            return self._conv(x)
        chunks = x.chunk(state.steps)
        first = self._conv(chunks[0])
        out = torch.empty((x.shape[0], *first.shape[1:]), dtype=first.dtype, device=first.device)
        step = first.shape[0]
        out[:step].copy_(first)
        del first
        for t, chunk in enumerate(chunks[1:], start=1):
            out[t * step:(t + 1) * step].copy_(self._conv(chunk))
        return out

    def _conv(self, x: Tensor) -> Tensor:
        if not x.is_floating_point():  # packed spikes
            x = x.to(self.weight.dtype)
        return super().forward(x)
