"""BatchNorm statistics over the samples of all processes (data-parallel training).

The maths every synchronised BatchNorm needs, on any backend (CPU/Gloo included;
``nn.SyncBatchNorm`` runs on CUDA only): per-channel moments combined exactly over processes, the
running-statistics update from given batch statistics, and a differentiable training-mode
BatchNorm whose statistics (and their gradients) cover the global batch, built on
``torch.distributed.nn.functional.all_reduce``. :func:`convert_sync_batchnorm` switches a model
over: layers that synchronise themselves (an attribute ``sync``, like
:class:`~esdsnn.layers.rate_norm.RateBatchNorm2d`, which knows the RateBP stages) are told to;
plain BatchNorms become :class:`GlobalBatchNorm`.
"""

from __future__ import annotations

from typing import Any, Optional, cast

import torch
from torch import Tensor, nn

LOW_PRECISION = (torch.float16, torch.bfloat16)


def group_size(group: Optional[Any] = None) -> int:
    """Processes in ``group`` (1 when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def global_sum(t: Tensor, group: Optional[Any]) -> Tensor:
    """Sum of ``t`` over the processes of ``group``; differentiable (the gradients of every
    process's copy are summed back, as for a sum over one big batch)."""
    if t.requires_grad:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t, group=group)
    import torch.distributed as dist

    t = t.clone()
    dist.all_reduce(t, group=group)
    return t


def global_mean(x: Tensor, dims: list[int], group: Optional[Any]) -> tuple[Tensor, Tensor]:
    """Per-channel mean over the samples of all processes (differentiable) and the global count."""
    local = x.sum(dim=dims, dtype=torch.float32).double()
    count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=torch.float64, device=x.device)
    total = global_sum(torch.cat([local, count]), group)
    n = total[-1].detach()
    return total[:-1] / n, n


@torch.no_grad()
def global_moments(x: Tensor, dims: list[int], group: Optional[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean, biased variance, count)`` per channel over the samples of all processes.

    Each process computes its own moments in one pass; one ``all_gather`` brings them together and
    they are combined exactly (``var = Σ n_r·(v_r + (m_r − m)²) / N``), in float64.
    """
    import torch.distributed as dist

    xs = x.float() if x.dtype in LOW_PRECISION else x
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
    # BatchNorm registers all three buffers when it tracks running statistics
    assert bn.running_var is not None and bn.num_batches_tracked is not None
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    unbiased = var.double() * (count / (count - 1).clamp_min(1))
    bn.running_mean.mul_(1.0 - momentum).add_(mean.detach().to(bn.running_mean.dtype), alpha=momentum)
    bn.running_var.mul_(1.0 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


def global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: Tensor, group: Optional[Any] = None) -> Tensor:
    """Training-mode BatchNorm of ``x`` with the statistics of the samples of all processes;
    differentiable, and updates ``bn``'s running statistics."""
    dims = [0, *list(range(2, x.dim()))]
    xf = x.float() if x.dtype in LOW_PRECISION else x
    mean, count = global_mean(xf, dims, group)
    mean = mean.to(xf.dtype)
    view = (1, -1, *([1] * (x.dim() - 2)))
    centred = xf - mean.view(view)
    var = (global_sum(centred.square().sum(dim=dims).double(), group) / count).to(xf.dtype)
    update_running_stats(bn, mean, var, count)
    out = centred * torch.rsqrt(var + bn.eps).view(view)
    if bn.affine:
        out = out * bn.weight.view(view) + bn.bias.view(view)
    return out


class GlobalBatchNorm(nn.BatchNorm2d):
    """A plain BatchNorm whose training statistics cover the samples of all processes of
    ``process_group``. Same parameters, buffers and state-dict keys as the BatchNorm it replaces."""

    process_group: Optional[Any] = None

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or group_size(self.process_group) <= 1:
            return super().forward(x)
        return global_batch_norm(self, x, self.process_group)


def convert_sync_batchnorm(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """Synchronise every BatchNorm of ``module`` over ``process_group`` (in place; returned).

    Layers with a ``sync`` attribute keep their class and get ``sync = True``; plain
    ``nn.BatchNorm1d/2d/3d`` are replaced by :class:`GlobalBatchNorm` sharing their parameters and
    buffers. Call before building the optimizer (parameters are shared anyway).
    """
    if hasattr(module, "sync"):
        layer: Any = module  # a layer with its own sync attribute (a RateBatchNorm); plain attributes
        layer.sync, layer.process_group = True, process_group
        return module
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for name, child in list(module.named_children()):
        if type(child) in plain:
            setattr(module, name, _global_copy(cast(nn.modules.batchnorm._BatchNorm, child), process_group))
        else:
            convert_sync_batchnorm(child, process_group)
    return module


def _global_copy(bn: nn.modules.batchnorm._BatchNorm, group: Optional[Any]) -> GlobalBatchNorm:
    new = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    new.process_group = group
    return new


__all__ = [
    "GlobalBatchNorm",
    "convert_sync_batchnorm",
    "global_batch_norm",
    "global_mean",
    "global_moments",
    "global_sum",
    "group_size",
    "update_running_stats",
]
