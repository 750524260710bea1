"""BatchNorm that knows the RateBP stages (a named layer, not hooks).

- spike pass / BPTT: ordinary BatchNorm over the folded ``[T·B, C, ...]`` activations.
- RateBP spike stage: normalise with the batch statistics of all T·B samples, record them in the
  trace, update the running statistics once.
- RateBP rate stage: normalise the rate input with statistics whose *value* is the recorded one
  and whose *gradient* is that of the rate batch's own statistics (straight-through); running
  statistics untouched.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..passes.context import current_pass


class RateBatchNorm2d(nn.BatchNorm2d):
    """Drop-in ``nn.BatchNorm2d`` for spiking models trained by BPTT or RateBP."""

    def _reduce_dims(self, x: Tensor) -> list[int]:
        return [0] + list(range(2, x.dim()))

    def _channel_view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> Tensor:
        state = current_pass(required=False)
        if state is None or state.kind in ("spike", "infer") or not self.training:
            return super().forward(x)
        if state.kind == "record":
            return self._spike_stage(x, state.trace)
        return self._rate_stage(x, state.trace)

    @torch.no_grad()
    def _spike_stage(self, x: Tensor, trace) -> Tensor:
        # one fused kernel: batch statistics, normalisation and the running-statistics update
        momentum = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        out, mean, invstd = torch.native_batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var, True, momentum, self.eps
        )
        var = invstd.pow(-2).sub_(self.eps).clamp_min_(0.0)  # biased variance of all T·B samples
        trace.record_norm(self, mean, var)
        return out

    def _rate_stage(self, x: Tensor, trace) -> Tensor:
        record = trace.norm(self)
        dims = self._reduce_dims(x)
        batch_mean = x.mean(dim=dims)
        mean = record.mean + (batch_mean - batch_mean.detach())
        centred = x - self._channel_view(mean, x)
        batch_var = centred.square().mean(dim=dims)
        var = (record.var + (batch_var - batch_var.detach())).clamp_min(0.0)
        out = centred * self._channel_view(torch.rsqrt(var + self.eps), x)
        if self.affine:
            out = out * self._channel_view(self.weight, x) + self._channel_view(self.bias, x)
        return out
