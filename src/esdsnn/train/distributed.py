"""Data-parallel training with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m esdsnn train ...`` starts N processes; each finds its rank in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (NCCL on CUDA,
Gloo on CPU) and trains its share of every batch. What changes, and what does not:

- ``batch_size`` is the **global** batch: each of the N processes takes ``batch_size / N``
  samples a step (it must divide evenly), so a run means the same thing on any number of GPUs.
- In-memory data (:class:`~esdsnn.data.base.TensorBatches`): every process draws the same seeded
  permutation and augmentation of the global batch and keeps its own slice (:class:`ShardedBatches`),
  so the global order does not depend on N. Loader-based data (ImageNet) gets a
  ``DistributedSampler`` for training and a strided, unpadded split of the evaluation set.
- The whole training method (model + ESD branches) is wrapped in DDP, so one DDP forward is one
  training step: RateBP's spike stage runs inside it under ``no_grad`` (no autograd graph, no
  gradient hooks) and every parameter gets its gradient from the one backward pass.
- ``sync_bn``: every BatchNorm normalises with the statistics of the global batch. The backbone's
  :class:`~esdsnn.layers.rate_norm.RateBatchNorm2d` does it itself (the spike stage records the
  global statistics, the rate stage's straight-through gradient is global); the branches' plain
  BatchNorms become :class:`GlobalBatchNorm`. Both run on any backend (CPU/Gloo included).
- Loss, accuracy and test accuracy are reduced over all processes; only rank 0 prints, shows
  progress bars and writes files.
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, TypeVar

import torch
from torch import Tensor, nn

from esdsnn import errors
from esdsnn.data.base import TensorBatches
from esdsnn.errors import ConfigError, EsdsnnError
from esdsnn.layers.rate_norm import RateBatchNorm2d, global_batch_norm, group_size
from esdsnn.methods.base import TrainingMethod

R = TypeVar("R")
Batch = tuple[Tensor, Tensor]


@dataclass
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- collectives (no-ops in a single process) ---------------------------------------------
    def sum(self, values: Tensor) -> Tensor:
        """``values`` summed over all processes (a new tensor)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        out = values.to(self.device).clone()
        dist.all_reduce(out)
        return out.to(values.device)

    def mean_count(self, counts: Tensor) -> Tensor:
        """Counts summed over all processes, divided by their number: the per-process share that
        makes DDP's gradient average of per-process means equal the mean over the global batch."""
        return self.sum(counts) / self.world_size

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every process (all processes then take the same branch)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([0.0 if flag else 1.0], dtype=torch.float64)).item() == 0)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics): what rank 0 saves is
        then what every process evaluates."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)

    def main_only(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on rank 0 only (file-system work), and give its result, or its error, to every
        process, so that a refused run directory stops all of them with the same message."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        failure: Optional[BaseException] = None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except BaseException as exc:  # re-raised below, after the others have been told
                failure = exc
                box[0] = ("error", type(exc).__name__, str(exc))
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        if failure is not None:
            raise failure
        if box[0][0] == "error":
            _, name, message = box[0]
            cls = getattr(errors, name, None)
            if isinstance(cls, type) and issubclass(cls, EsdsnnError):
                raise cls(message)
            raise RuntimeError(f"rank 0 failed: {name}: {message}")
        return box[0][1]

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def _rank_device(name: str, local_rank: int) -> str:
    """The device of one process: ``auto``/``cuda`` mean the GPU of its local rank."""
    if name == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda:{local_rank}"
    return name


def launched_distributed() -> bool:
    """Started by torchrun (or similar) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


@contextlib.contextmanager
def session(device_name: str, resolve: Callable[[str], torch.device]) -> Iterator[DistContext]:
    """The :class:`DistContext` of this process; joins (and afterwards leaves) the process group
    when started by torchrun with more than one process. ``resolve`` checks the device name."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the caller set the group up
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = resolve(_rank_device(device_name, local) if world > 1 else device_name)
        yield DistContext(rank, world, local, device, dist.get_backend())
        return
    if not launched_distributed():
        yield DistContext(device=resolve(device_name))
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"WORLD_SIZE is set but RANK is missing or bad ({exc}): start with torchrun") from None
    device = resolve(_rank_device(device_name, local))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the process group ({backend}): {' '.join(str(exc).split())[:300]}") from None
    try:
        yield DistContext(rank, world, local, device, backend)
    finally:
        dist.destroy_process_group()


# ---- the model ---------------------------------------------------------------------------------
class GlobalBatchNorm(nn.BatchNorm2d):
    """A plain BatchNorm whose training statistics cover the samples of all processes of
    ``process_group`` (any backend; ``nn.SyncBatchNorm`` needs CUDA). Same parameters, buffers
    and state-dict keys as the BatchNorm it replaces."""

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

    :class:`RateBatchNorm2d` layers keep their class and get ``sync = True`` (they know the RateBP
    stages); plain ``nn.BatchNorm1d/2d/3d`` are replaced by :class:`GlobalBatchNorm` sharing their
    parameters and buffers. Call before building the optimizer (parameters are shared anyway).
    """
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for name, child in list(module.named_children()):
        if isinstance(child, RateBatchNorm2d):
            child.sync = True
            child.process_group = process_group
        elif type(child) in plain:
            setattr(module, name, _global_copy(child, process_group))
        else:
            convert_sync_batchnorm(child, process_group)
    if isinstance(module, RateBatchNorm2d):
        module.sync, module.process_group = True, process_group
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


def wrap_ddp(method: nn.Module, ctx: DistContext) -> nn.Module:
    """The whole method in DDP: one forward = one training step (for RateBP: the no-grad spike
    stage, then the rate stage), one backward = one all-reduce of every gradient. Every parameter
    gets a gradient in every step (the KD teacher is not a submodule), so no unused-parameter
    search is needed. ESD's means over reliable samples become means over the global batch."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(method, TrainingMethod) and ctx.distributed:
        method.reduce_teacher_counts = ctx.mean_count

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # A conv with one input channel gets weight gradients whose size-1 dimension has another
    # (meaningless) stride than the bucket's; DDP warns although the memory is the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # buffers (BN running statistics) are synced from rank 0 at every forward (DDP's default);
    # gradients live in the all-reduce buckets (no copy, and no layout warnings for odd strides)
    return DistributedDataParallel(method, device_ids=device_ids, find_unused_parameters=False,
                                   gradient_as_bucket_view=True)


# ---- the data ----------------------------------------------------------------------------------
class ShardedBatches:
    """One process's share of a :class:`TensorBatches` of global batches.

    Every process draws the same seeded permutation (and the same augmentation) of each global
    batch and keeps slice ``rank`` of ``world_size`` near-equal slices; the union of the slices is
    exactly the batch a single process would train on. With one process it yields exactly what
    the wrapped source yields. For training (``train=True``) a last global batch too small to give
    every process two samples is dropped (BatchNorm needs more than one value); for evaluation
    nothing is dropped, and a process whose slice is empty skips that batch.
    :meth:`iter_from` starts mid-epoch (resume) without preparing the skipped batches when there
    is no augmentation to replay.
    """

    def __init__(self, source: TensorBatches, rank: int = 0, world_size: int = 1, *, train: bool = True) -> None:
        self.source = source
        self.rank = rank
        self.world_size = world_size
        self.train = train

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __len__(self) -> int:
        src = self.source
        n = len(src)
        if self.train and self.world_size > 1 and n:
            last = min(len(src.x) - (n - 1) * src.batch_size, src.batch_size)
            if last < 2 * self.world_size:
                n -= 1
        return n

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        src = self.source
        gen = src.generator()
        n = len(src.x)
        order = torch.randperm(n, generator=gen) if src.shuffle else torch.arange(n)
        order = order.to(src.device)
        for i in range(len(self)):
            idx = order[i * src.batch_size : (i + 1) * src.batch_size]
            if src.augment is None:
                if i < start:
                    continue
                idx = idx.tensor_split(self.world_size)[self.rank]  # prepare is per sample
                if len(idx):
                    xb, yb = src.x[idx], src.y[idx]
                    yield (src.prepare(xb) if src.prepare is not None else xb), yb
                continue
            xb, yb = src.x[idx], src.y[idx]
            if src.prepare is not None:
                xb = src.prepare(xb)
            xb = src.augment(xb, gen)  # replayed for skipped batches: the generator must advance
            if i < start:
                continue
            xb, yb = xb.tensor_split(self.world_size)[self.rank], yb.tensor_split(self.world_size)[self.rank]
            if len(yb):
                yield xb, yb


class _StridedShard(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + N, ...``: every sample exactly once over all processes (evaluation)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))


def sampler_factory(ctx: DistContext) -> Callable[..., torch.utils.data.Sampler]:
    """For loaders that take one (ImageNet): a ``DistributedSampler`` for the shuffled training
    set (equal length on every process), a strided unpadded split for evaluation."""
    from torch.utils.data.distributed import DistributedSampler

    def factory(dataset: Any, *, shuffle: bool, seed: int) -> torch.utils.data.Sampler:
        if shuffle:
            return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
        return _StridedShard(len(dataset), ctx.rank, ctx.world_size)

    return factory


def batches_from(source: Any, start: int) -> Iterator[tuple[int, Batch]]:
    """``(index, batch)`` of an epoch from batch ``start`` on, skipping cheaply where possible:
    sources with ``iter_from``, and ``DataLoader``-backed ones (the skipped samples are not
    decoded); otherwise the skipped batches are drawn and dropped."""
    if start <= 0:
        yield from enumerate(source)
        return
    if hasattr(source, "iter_from"):
        yield from enumerate(source.iter_from(start), start)
        return
    loader = getattr(source, "loader", None)
    if isinstance(loader, torch.utils.data.DataLoader) and loader.batch_size:
        rest = list(loader.sampler)[start * loader.batch_size :]
        clone = copy.copy(source)
        clone.loader = torch.utils.data.DataLoader(
            loader.dataset, batch_size=loader.batch_size, sampler=rest, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
            worker_init_fn=loader.worker_init_fn, timeout=loader.timeout,
        )
        yield from enumerate(clone, start)
        return
    for i, batch in enumerate(source):
        if i >= start:
            yield i, batch


__all__ = [
    "DistContext", "GlobalBatchNorm", "ShardedBatches", "batches_from", "convert_sync_batchnorm",
    "launched_distributed", "sampler_factory", "session", "wrap_ddp",
]
