"""BatchNorm that knows the RateBP stages (a named layer, not hooks).

- spike pass / BPTT: ordinary BatchNorm over the folded ``[T·B, C, ...]`` activations.
- RateBP spike stage: normalise with the batch statistics of all T·B samples, record them in the
  trace, update the running statistics once.
- RateBP rate stage: normalise the rate input with statistics whose *value* is the recorded one
  and whose *gradient* is that of the rate batch's own statistics (straight-through); running
  statistics untouched.

Data-parallel training with synchronised BatchNorm sets :attr:`RateBatchNorm2d.sync` (see
``esdsnn.train.distributed.convert_sync_batchnorm``): in training mode every statistic above then
covers the *global* batch, the samples of all processes of ``process_group``. The spike stage
records the global mean/variance (one ``all_gather`` of per-process moments), and the rate stage
and BPTT take their statistics' gradients through a differentiable ``all_reduce``, so that N
processes with B samples each compute what one process computes on the N·B batch.
(``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace this layer by a plain SyncBatchNorm,
which knows nothing of the RateBP stages, and runs on CUDA only.)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..passes.context import current_pass

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class RateBatchNorm2d(nn.BatchNorm2d):
    """Drop-in ``nn.BatchNorm2d`` for spiking models trained by BPTT or RateBP.

    ``inplace=True``: the RateBP spike stage normalises its input in place (same kernel, same
    values), for inputs nobody else holds, such as a convolution's output.
    """

    #: Normalise training batches with the statistics of all processes of ``process_group``
    #: (``None``: the default group). Has no effect unless torch.distributed is initialised with
    #: more than one process.
    sync: bool = False
    process_group: Optional[Any] = None

    def __init__(self, num_features: int, *args: Any, inplace: bool = False, **kwargs: Any) -> None:
        super().__init__(num_features, *args, **kwargs)
        self.inplace = inplace

    def extra_repr(self) -> str:
        return super().extra_repr() + (", inplace=True" if self.inplace else "")

    def _reduce_dims(self, x: Tensor) -> list[int]:
        return [0] + list(range(2, x.dim()))

    def _channel_view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> Tensor:
        state = current_pass(required=False)
        if not self.training or (state is not None and state.kind == "infer"):
            return super().forward(x)
        synced = self.sync and group_size(self.process_group) > 1
        if state is None or state.kind == "spike":
            return global_batch_norm(self, x, self.process_group) if synced else super().forward(x)
        if state.kind == "record":
            return self._spike_stage(x, state.trace, synced)
        return self._rate_stage(x, state.trace, synced)

    @torch.no_grad()
    def _spike_stage(self, x: Tensor, trace, synced: bool = False) -> Tensor:
        if synced:
            mean, var, count = global_moments(x, self._reduce_dims(x), self.process_group)
            update_running_stats(self, mean, var, count)
            out = F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
            trace.record_norm(self, mean, var)
            return out
        # one fused kernel: batch statistics, normalisation and the running-statistics update
        momentum = 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        args = (x, self.weight, self.bias, self.running_mean, self.running_var, True, momentum, self.eps)
        if self.inplace and x.dtype not in _LOW_PRECISION:  # (mixed precision: statistics in float32)
            mean, invstd = x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
            out, mean, invstd = torch.ops.aten.native_batch_norm.out(*args, out=x, save_mean=mean, save_invstd=invstd)
        else:
            out, mean, invstd = torch.native_batch_norm(*args)
        var = invstd.pow(-2).sub_(self.eps).clamp_min_(0.0)  # biased variance of all T·B samples
        trace.record_norm(self, mean, var)
        return out

    def _rate_stage(self, x: Tensor, trace, synced: bool = False) -> Tensor:
        record = trace.norm(self)
        dims = self._reduce_dims(x)
        if synced:
            batch_mean, count = _global_mean(x, dims, self.process_group)
            batch_mean = batch_mean.to(record.mean.dtype)
        else:
            batch_mean = x.mean(dim=dims)
        mean = record.mean + (batch_mean - batch_mean.detach())
        centred = x - self._channel_view(mean, x)
        if synced:
            batch_var = (_global_sum(centred.square().sum(dim=dims).double(), self.process_group) / count)
            batch_var = batch_var.to(record.var.dtype)
        else:
            batch_var = centred.square().mean(dim=dims)
        var = (record.var + (batch_var - batch_var.detach())).clamp_min(0.0)
        out = centred * self._channel_view(torch.rsqrt(var + self.eps), x)
        if self.affine:
            out = out * self._channel_view(self.weight, x) + self._channel_view(self.bias, x)
        return out


# ---- statistics over all processes ---------------------------------------------------------------
def group_size(group: Optional[Any] = None) -> int:
    """Processes in ``group`` (1 when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _SumOverProcesses(torch.autograd.Function):
    """``all_reduce(SUM)`` with a gradient: the gradients of every process's copy are summed back,
    as for a sum over one big batch."""

    @staticmethod
    def forward(ctx, t: Tensor, group: Optional[Any]) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        ctx.group = group
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _global_sum(t: Tensor, group: Optional[Any]) -> Tensor:
    """Sum of ``t`` over the processes of ``group``; differentiable when ``t`` requires grad."""
    if t.requires_grad:
        return _SumOverProcesses.apply(t, group)
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t, group=group)
    return t


def _global_mean(x: Tensor, dims: list[int], group: Optional[Any]) -> tuple[Tensor, Tensor]:
    """Per-channel mean over the samples of all processes (differentiable) and the global count."""
    local = x.sum(dim=dims, dtype=torch.float32).double()
    count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64, device=x.device)
    total = _global_sum(torch.cat([local, count]), group)
    n = total[-1].detach()
    return total[:-1] / n, n


@torch.no_grad()
def global_moments(x: Tensor, dims: list[int], group: Optional[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean, biased variance, count)`` per channel over the samples of all processes.

    Each process computes its own moments in one pass; one ``all_gather`` brings them together and
    they are combined exactly (``var = Σ n_r·(v_r + (m_r − m)²) / N``), in float64.
    """
    import torch.distributed as dist

    xs = x.float() if x.dtype in _LOW_PRECISION else x
    var, mean = torch.var_mean(xs, dim=dims, correction=0)
    n = torch.full((1,), float(xs.numel() // xs.shape[1]), dtype=torch.float64, device=x.device)
    local = torch.cat([mean.double(), var.double(), n])
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, local, group=group)
    stacked = torch.stack(parts)
    c = mean.numel()
    means, variances, counts = stacked[:, :c], stacked[:, c : 2 * c], stacked[:, 2 * c :]
    total = counts.sum()
    g_mean = (means * counts).sum(0) / total
    g_var = ((variances + (means - g_mean).square()) * counts).sum(0) / total
    return g_mean.to(mean.dtype), g_var.to(var.dtype), total


@torch.no_grad()
def update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor, count: Tensor) -> None:
    """What BatchNorm does to its running statistics in training mode, from given batch statistics
    (``var`` biased; the running variance takes the unbiased one)."""
    if not bn.track_running_stats or bn.running_mean is None:
        return
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    unbiased = var.double() * (count / (count - 1).clamp_min(1))
    bn.running_mean.mul_(1.0 - momentum).add_(mean.detach().to(bn.running_mean.dtype), alpha=momentum)
    bn.running_var.mul_(1.0 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


def global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, group: Optional[Any] = None) -> Tensor:
    """Training-mode BatchNorm of ``x`` with the statistics of the samples of all processes;
    differentiable (BPTT, plain BN layers), and updates ``bn``'s running statistics."""
    dims = [0] + list(range(2, x.dim()))
    xf = x.float() if x.dtype in _LOW_PRECISION else x
    mean, count = _global_mean(xf, dims, group)
    mean = mean.to(xf.dtype)
    view = (1, -1, *([1] * (x.dim() - 2)))
    centred = xf - mean.view(view)
    var = (_global_sum(centred.square().sum(dim=dims).double(), group) / count).to(xf.dtype)
    update_running_stats(bn, mean, var, count)
    out = centred * torch.rsqrt(var + bn.eps).view(view)
    if bn.affine:
        out = out * bn.weight.view(view) + bn.bias.view(view)
    return out
