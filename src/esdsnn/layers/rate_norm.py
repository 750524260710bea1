"""BatchNorm that knows the RateBP stages (a named layer, not hooks).

- spike pass / BPTT: ordinary BatchNorm over the folded ``[T·B, C, ...]`` activations.
- RateBP spike stage: normalise with the batch statistics of all T·B samples, record them in the
  trace, update the running statistics once.
- RateBP rate stage: normalise the rate input with statistics whose *value* is the recorded one
  and whose *gradient* is that of the rate batch's own statistics (straight-through); running
  statistics untouched.

With ``sync`` set (by :func:`~esdsnn.layers.sync_norm.convert_sync_batchnorm` under data
parallelism) every training statistic above covers the samples of all processes of
``process_group``, so that N processes with B samples each compute what one process computes on
the N·B batch (the maths is in :mod:`esdsnn.layers.sync_norm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime.context import PassState, current_pass
from ..runtime.trace import Trace
from .conv import Conv2d
from .sync_norm import (
    LOW_PRECISION,
    global_batch_norm,
    global_mean,
    global_moments,
    global_sum,
    group_size,
    update_running_stats,
)

if TYPE_CHECKING:
    # The mixin runs only ahead of nn.BatchNorm1d/2d in their MRO: for the type checker it is
    # a _BatchNorm (its attributes, super().forward, ...); at run time a plain object mixin.
    _NormMixinBase = nn.modules.batchnorm._BatchNorm
else:
    _NormMixinBase = object


class _RateNorm(_NormMixinBase):
    """The pass-aware forward of :class:`RateBatchNorm1d` and :class:`RateBatchNorm2d`.

    ``inplace=True`` (as in ``nn.ReLU(inplace=True)``): the RateBP spike stage normalises its
    input in place (same kernel, same values), for inputs nobody else holds, such as the fresh
    output of the convolution before it (:func:`~esdsnn.layers.conv_bn` builds such pairs).
    """

    #: Normalise training batches with the statistics of all processes of ``process_group``
    #: (``None``: the default group). No effect unless torch.distributed runs several processes.
    sync: bool = False
    process_group: Optional[Any] = None

    def __init__(self, num_features: int, *args: Any, inplace: bool = False, **kwargs: Any) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.inplace = inplace

    def extra_repr(self) -> str:
        return super().extra_repr() + (", inplace=True" if self.inplace else "")

    def _reduce_dims(self, x: Tensor) -> list[int]:
        return [0, *list(range(2, x.dim()))]

    def _channel_view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> Tensor:
        state = current_pass(required=False)
        synced = self.sync and group_size(self.process_group) > 1
        if state is not None and state.static is not None and not synced:
            once = state.static.one_step(x)
            if once is not None:  # T equal steps: the statistics of one copy are those of all T
                return state.static.repeat(self._static_forward(once, state))
        if not self.training or (state is not None and state.kind == "spike"):
            return super().forward(x)
        if state is None or state.kind == "bptt":
            return global_batch_norm(self, x, self.process_group) if synced else super().forward(x)
        if state.kind == "spike_stage":
            return self._spike_stage(x, state, synced)
        assert state.trace is not None  # the RateBP stages carry a trace (PassState checks)
        return self._rate_stage(x, state.trace, synced)

    def _static_forward(self, once: Tensor, state: PassState) -> Tensor:
        """BatchNorm of ``state.steps`` copies of ``once``, computed on ``once``: the same batch
        statistics and normalised values; the running variance takes the unbiased correction of
        all T·B samples, as the general path does."""
        if not self.training or state.kind == "spike":
            return super().forward(once)
        out, mean, invstd = torch.native_batch_norm(once, self.weight, self.bias, None, None, True, 0.0, self.eps)
        with torch.no_grad():
            var = invstd.detach().pow(-2).sub_(self.eps).clamp_min_(0.0)
            count = torch.tensor(float(state.steps * once.numel() // once.shape[1]), dtype=torch.float64)
            update_running_stats(self, mean.detach(), var, count)
        if state.kind == "spike_stage":
            assert state.trace is not None
            state.trace.record_norm(self, mean.detach(), var)
        return out

    @torch.no_grad()
    def _spike_stage(self, x: Tensor, state: PassState, synced: bool) -> Tensor:
        trace = state.trace
        assert trace is not None  # the RateBP stages carry a trace (PassState checks)
        if synced:
            mean, var, count = global_moments(x, self._reduce_dims(x), self.process_group)
            update_running_stats(self, mean, var, count)
            out = F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
            trace.record_norm(self, mean, var)
            return out
        # one fused kernel: batch statistics, normalisation and the running-statistics update
        momentum = 0.0
        if self.track_running_stats:
            assert self.num_batches_tracked is not None  # registered when tracking running statistics
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        args = (x, self.weight, self.bias, self.running_mean, self.running_var, True, momentum, self.eps)
        # Mixed precision: the statistics are float32 either way (the kernel accumulates a half-type
        # input in float32); bfloat16 is normalised in place on CPU, where that kernel is checked
        # against out of place, half types elsewhere out of place.
        low = x.dtype in LOW_PRECISION
        in_place = (
            self.inplace
            and state.memory.inplace_norm
            and type(x) is Tensor
            and (not low or (x.dtype == torch.bfloat16 and x.device.type == "cpu"))
        )
        if in_place:
            stats = torch.float32 if low else x.dtype
            mean, invstd = x.new_empty(x.shape[1], dtype=stats), x.new_empty(x.shape[1], dtype=stats)
            out, mean, invstd = torch.ops.aten.native_batch_norm.out(*args, out=x, save_mean=mean, save_invstd=invstd)
        else:
            out, mean, invstd = torch.native_batch_norm(*args)
        var = invstd.pow(-2).sub_(self.eps).clamp_min_(0.0)  # biased variance of all T·B samples
        trace.record_norm(self, mean, var)
        return out

    def _rate_stage(self, x: Tensor, trace: Trace, synced: bool) -> Tensor:
        record = trace.norm(self)
        if x.dtype in LOW_PRECISION and not synced:  # bf16-mixed: the same maths in native kernels
            return _RecordedStatsNorm.apply(x, record.mean, record.var, self.weight, self.bias, self.eps)
        dims = self._reduce_dims(x)
        if synced:
            batch_mean, count = global_mean(x, dims, self.process_group)
            batch_mean = batch_mean.to(record.mean.dtype)
        else:
            batch_mean = x.mean(dim=dims)
        mean = record.mean + (batch_mean - batch_mean.detach())
        centred = x - self._channel_view(mean, x)
        if synced:
            batch_var = global_sum(centred.square().sum(dim=dims).double(), self.process_group) / count
            batch_var = batch_var.to(record.var.dtype)
        else:
            batch_var = centred.square().mean(dim=dims)
        var = (record.var + (batch_var - batch_var.detach())).clamp_min(0.0)
        out = centred * self._channel_view(torch.rsqrt(var + self.eps), x)
        if self.affine:
            out = out * self._channel_view(self.weight, x) + self._channel_view(self.bias, x)
        return out


class _RecordedStatsNorm(torch.autograd.Function):
    """The rate stage's BatchNorm (:meth:`_RateNorm._rate_stage`: value and gradient) in two
    native BatchNorm kernels, for half-type input (``bf16-mixed``), where it rounds as autocast's
    own BatchNorm does: input, output and their gradients in the half type, statistics and
    parameter gradients in float32. It replaces a chain of about twenty elementwise passes.

    Value: ``(x − m)·r·w + b`` with the recorded mean ``m`` and ``r = (v + ε)^-½`` of the recorded
    variance (the eval-mode kernel). Gradient, with ``g`` the output's, ``μ`` the batch's own mean
    and ``N`` the values a channel: the straight-through statistics give
    ``∂L/∂x = r·w·g − r·w·Σg/N − r³·w·Σ(g·(x − m))·(x − μ)/N``. The training-mode backward
    kernel with ``m`` and ``r`` as its saved statistics computes the same with ``(x − m)`` in the
    last factor, so the per-channel constant ``r²·w·Σ(g·x̂)·(μ − m)/N`` (``x̂ = (x − m)·r``; the
    kernel returns ``Σ(g·x̂)`` as the weight's gradient) is added. Tested against autograd
    through :meth:`_RateNorm._rate_stage` in float64.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        mean: Tensor,
        var: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        eps: float,
    ) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            dims = [0, *list(range(2, x.dim()))]
            batch_mean = x.mean(dim=dims, dtype=torch.promote_types(x.dtype, torch.float32))
            invstd = torch.rsqrt(var + eps)
            out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, mean, invstd, batch_mean, weight)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, mean, invstd, batch_mean, weight = ctx.saved_tensors
        affine = weight is not None
        w = weight.detach() if affine else torch.ones_like(invstd)
        with torch.autocast(x.device.type, enabled=False):
            grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
                grad_out.to(x.dtype), x, w, None, None, mean, invstd, True, ctx.eps, [True, True, affine]
            )
            count = x.numel() // x.shape[1]
            shift = invstd.square().mul_(w).mul_(grad_w).mul_(batch_mean - mean).div_(count)
            grad_x.add_(shift.to(grad_x.dtype).view(1, -1, *([1] * (x.dim() - 2))))  # (one type: vectorised)
        if not affine:
            return grad_x, None, None, None, None, None
        return grad_x, None, None, grad_w.to(weight.dtype), grad_b.to(weight.dtype), None


class RateBatchNorm1d(_RateNorm, nn.BatchNorm1d):
    """Drop-in ``nn.BatchNorm1d`` (``[N, C]`` or ``[N, C, L]``) for models trained by BPTT or RateBP."""


class RateBatchNorm2d(_RateNorm, nn.BatchNorm2d):
    """Drop-in ``nn.BatchNorm2d`` for spiking models trained by BPTT or RateBP."""


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, *, bias: bool = False) -> nn.Sequential:
    """``Conv2d → RateBatchNorm2d`` (padding ``kernel // 2``): the BatchNorm only ever sees the
    convolution's fresh output, so its spike stage may normalise in place. Unpack it
    (``conv, bn = conv_bn(...)``) to give the two layers names of their own."""
    return nn.Sequential(
        Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias),
        RateBatchNorm2d(c_out, inplace=True),
    )
