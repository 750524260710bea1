"""Convolution for the multi-step passes: step-wise on CPU in float32, reading packed spikes, in
bfloat16 where the precision asks for it; and a strided depthwise convolution with a fast gradient.

Conv layers are stateless, so the folded ``[T·B, C, H, W]`` input could go through in one call;
on CPU in float32 that call is slower than T calls of batch B (the working set of one step stays
in cache: measured 310 ms vs 225 ms for a 64→64 3×3 conv at T·B = 6·32, 32×32, one thread), so the
no-grad passes convolve one time step at a time. Under autograd (BPTT, the rate stage) the layer is
a plain ``nn.Conv2d``.

It reads packed spikes (:class:`~esdsnn.neurons.spikes.PackedSpikes`) byte by byte: each step is
cast to the weight's type just before its convolution, so only one step is ever held as float.
An input whose steps are all equal (the direct-encoded image, :mod:`esdsnn.runtime.static`) is
convolved once, in every pass. In the no-grad passes a convolution on spikes runs in the pass's
``spike_dtype`` (bfloat16, :mod:`esdsnn.runtime.precision`; also under a bfloat16 autocast) with
weights cast once per optimiser step. Without an autocast (evaluation) it returns float32, as the
layers after it expect. Under the bfloat16 autocast of ``bf16-mixed`` (RateBP's spike stage) it
returns bfloat16, as autocast itself would: the BatchNorm after it then reads half the bytes
(accumulating its statistics in float32) and the neurons fire bfloat16 spikes that the next
convolution reads without a cast. There all T steps go through in one call: in bfloat16 that is
3–12 % faster than T calls (measured, AVX512-BF16, one thread, T·B = 6·16, 64 to 512 channels)
and needs no copy into an output buffer.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..neurons.spikes import PackedSpikes
from ..runtime.context import PassState, current_pass


def _low_precision(state: Optional[PassState], device: torch.device) -> Optional[torch.dtype]:
    """The type of no-grad convolutions on spikes: the pass's, or a bfloat16 autocast's."""
    if state is None or not state.no_grad:
        return None
    if state.spike_dtype is not None:
        return state.spike_dtype
    return torch.bfloat16 if _autocast_is(torch.bfloat16, device) else None


def _autocast_is(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether an autocast to ``dtype`` is on for ``device``'s type."""
    return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == dtype


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) with step-wise no-grad passes."""

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, PackedSpikes):
            x = x.packed
        state = current_pass(required=False)
        if state is not None and state.static is not None:
            once = state.static.one_step(x)
            if once is not None:  # T equal steps (a direct-encoded image): convolve one, repeat it
                return state.static.repeat(self._conv(once))
        low = _low_precision(state, x.device)
        if low is not None and x.is_floating_point() and x.dtype != low:
            low = None  # real-valued input (an image, event frames): the weights' type, or the autocast's
        keep = low is not None and _autocast_is(low, x.device)  # bf16-mixed: activations stay bfloat16
        stepwise = state is not None and state.no_grad and state.steps > 1 and x.device.type == "cpu"
        if keep or not stepwise:
            return self._conv(x, low, keep)
        assert state is not None  # stepwise implies a pass
        chunks = x.chunk(state.steps)
        first = self._conv(chunks[0], low)
        out = torch.empty((x.shape[0], *first.shape[1:]), dtype=first.dtype, device=first.device)
        step = first.shape[0]
        out[:step].copy_(first)
        del first
        for t, chunk in enumerate(chunks[1:], start=1):
            out[t * step : (t + 1) * step].copy_(self._conv(chunk, low))
        return out

    def _conv(self, x: Tensor, low: Optional[torch.dtype] = None, keep: bool = False) -> Tensor:
        """The convolution; with ``low``, of spikes (exact in any float type) against weights cast
        once, returning ``low`` if ``keep`` else the weights' type."""
        if low is not None:
            weight, bias = self._cast_parameters(low)
            with torch.autocast(x.device.type, enabled=False):
                out = self._conv_forward(x.to(low), weight, bias)
            return out if keep else out.to(self.weight.dtype)
        if not x.is_floating_point():  # packed spikes
            x = x.to(self.weight.dtype)
        return super().forward(x)

    def _cast_parameters(self, dtype: torch.dtype) -> tuple[Tensor, Optional[Tensor]]:
        """Weight and bias in ``dtype``, cast again only after they change (an optimiser step)."""
        key = (
            dtype,
            self.weight.data_ptr(),
            self.weight._version,
            None if self.bias is None else (self.bias.data_ptr(), self.bias._version),
        )
        cached = self.__dict__.get("_cast_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                bias = None if self.bias is None else self.bias.to(dtype)
                cached = (key, self.weight.to(dtype), bias)
            self.__dict__["_cast_cache"] = cached
        return cached[1], cached[2]


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) for a depthwise convolution
    (``groups = in_channels``) whose gradient stays fast when it is strided and runs in bfloat16
    on CPU.

    oneDNN computes the input gradient of a strided bfloat16 depthwise convolution about ten times
    slower than that of the unstrided one (measured, AVX512-BF16, one thread, batch 16, 3×3,
    stride 2: 14.7 vs 1.7 ms forward + backward at 128 channels 16×16, 21.9 vs 8.2 ms at 64
    channels 32×32). There the layer convolves with stride 1 and keeps
    every ``stride``-th row and column: output ``(i, j)`` of the strided convolution is output
    ``(s·i, s·j)`` of the unstrided one (the same sum over the same inputs, so the same value), and
    the gradients are those of that selection. Elsewhere (float32 included, which stays bit for
    bit what it was) it is the plain convolution.
    """

    def forward(self, x: Tensor) -> Tensor:
        strided = self.stride != (1, 1) and self.groups == self.in_channels and self.padding_mode == "zeros"
        if strided and x.device.type == "cpu" and (x.dtype == torch.bfloat16 or _autocast_is(torch.bfloat16, x.device)):
            out = F.conv2d(x, self.weight, self.bias, 1, self.padding, self.dilation, self.groups)
            return out[:, :, :: self.stride[0], :: self.stride[1]]
        return super().forward(x)
