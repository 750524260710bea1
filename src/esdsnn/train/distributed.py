"""Data-parallel training with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m esdsnn train ...`` starts N processes; each finds its rank in the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins the process group (NCCL on CUDA,
Gloo on CPU) and trains its share of every batch. What changes, and what does not:

- ``batch_size`` is the **global** batch: each of the N processes takes ``batch_size / N``
  samples a step (it must divide evenly), so a run means the same thing on any number of GPUs.
- The data sources shard themselves (``source.shard(rank, world_size)``, see
  :mod:`esdsnn.data.base`): in-memory data draws the same seeded permutation and augmentation of
  the global batch on every process and keeps its own slice, so the global order does not depend
  on N; loader-based data (ImageNet) gets a padded strided shard of the epoch's permutation for
  training and an unpadded one for evaluation.
- The whole training method (model + ESD branches) is wrapped in DDP, so one DDP forward is one
  training step: RateBP's spike stage runs inside it under ``no_grad`` (no autograd graph, no
  gradient hooks) and every parameter gets its gradient from the one backward pass. The method
  prepares itself first (:meth:`~esdsnn.methods.TrainingMethod.prepare_distributed`).
- ``sync_bn``: every BatchNorm normalises with the statistics of the global batch
  (:func:`esdsnn.layers.sync_norm.convert_sync_batchnorm`; any backend, CPU/Gloo included).
- Loss, accuracy and test accuracy are reduced over all processes; only rank 0 prints, shows
  progress bars and writes files.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import torch
from torch import Tensor, nn

from esdsnn import errors
from esdsnn.errors import ConfigError, EsdsnnError
from esdsnn.methods.base import TrainingMethod

R = TypeVar("R")


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
        init_process_group(backend=backend, rank=rank, world_size=world)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot join the process group ({backend}): {' '.join(str(exc).split())[:300]}") from None
    finished = False
    try:
        yield DistContext(rank, world, local, device, backend)
        finished = True
    finally:
        leave_process_group(finished)


def init_process_group(**options: Any) -> None:
    """``torch.distributed.init_process_group(**options)``, with ``torch._dynamo`` imported first.

    ``torch._dynamo`` imported while a process group exists (DistributedDataParallel imports it
    in its constructor) keeps a reference to that group, so ``destroy_process_group`` can no
    longer stop Gloo's worker threads: they outlive the interpreter, and one that drops a
    tensor's last reference while Python shuts down needs the GIL, which kills the process with
    SIGABRT ("terminate called without an active exception") after a run that succeeded.
    Imported before, it holds nothing (tested: the threads are gone after :func:`leave_process_group`).
    """
    import torch._dynamo  # noqa: F401  (see the docstring)
    import torch.distributed as dist

    dist.init_process_group(**options)


def leave_process_group(finished: bool = True) -> None:
    """Destroy the process group (stopping its threads); after a normal end, first wait at a
    barrier so that no process leaves while another still communicates with it. (After an
    error the others may never reach the barrier: then leave at once.)"""
    import gc

    import torch.distributed as dist

    if finished:
        dist.barrier()
    gc.collect()  # a DistributedDataParallel in a reference cycle holds the group (and its threads)
    dist.destroy_process_group()


# ---- the model ---------------------------------------------------------------------------------
def wrap_ddp(method: nn.Module, ctx: DistContext) -> nn.Module:
    """The whole method in DDP: one forward = one training step (for RateBP: the no-grad spike
    stage, then the rate stage), one backward = one all-reduce of every gradient. Every parameter
    gets a gradient in every step (the KD teacher is not a submodule), so no unused-parameter
    search is needed. ESD's means over reliable samples become means over the global batch."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(method, TrainingMethod) and ctx.distributed:
        method.prepare_distributed(ctx.mean_count)

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # A conv with one input channel gets weight gradients whose size-1 dimension has another
    # (meaningless) stride than the bucket's; DDP warns although the memory is the same.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # buffers (BN running statistics) are synced from rank 0 at every forward (DDP's default);
    # gradients live in the all-reduce buckets (no copy, and no layout warnings for odd strides)
    return DistributedDataParallel(
        method, device_ids=device_ids, find_unused_parameters=False, gradient_as_bucket_view=True
    )


__all__ = ["DistContext", "init_process_group", "launched_distributed", "leave_process_group", "session", "wrap_ddp"]
