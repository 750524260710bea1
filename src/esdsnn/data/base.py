"""What the training loop needs from a data set: batches on the device and a few facts.

Every data set is loaded from one :class:`DataRequest` (each loader reads what applies to it) and
returns a :class:`DataBundle` of two :class:`BatchSource` objects. A source is the one batching
path for a single process, data parallelism and resume alike: ``set_epoch(e)`` fixes the order
and augmentation of epoch ``e``, ``shard(rank, world_size)`` keeps one process's share of every
global batch, and ``iter_from(step)`` starts mid-epoch. Small data sets (digits, npz, CIFAR,
CIFAR10-DVS) live in memory as tensors (:class:`TensorBatches`); large ones (ImageNet) wrap a
``DataLoader`` behind the same interface.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Optional, Protocol

import torch
from torch import Tensor

from esdsnn.data.augment import AugmentConfig
from esdsnn.fields import check_choices, option

Augment = Callable[[Tensor, torch.Generator], Tensor]
Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class DataOptions:
    """Choices that belong to one data set (each data set lists those that apply to it,
    :attr:`esdsnn.data.DatasetInfo.options`; only those are recorded in a run's ``config.yaml``)."""

    dvs_split: Literal["official", "stratified"] = option(
        "official",
        "CIFAR10-DVS train/test split: official (the official ESD code's seeded random_split "
        "9000/1000, the paper's test set) or stratified (100 test files per class)",
    )

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(frozen=True)
class DataRequest:
    """What a data-set loader is asked for. ``batch_size`` is the global batch (sources are
    sharded afterwards); ``T`` the time steps (event data builds that many frames); ``workers``
    for loaders that decode or convert in processes (None: the loader's default); ``options``
    the data set's own choices."""

    data_path: Optional[str] = None
    batch_size: int = 64
    seed: int = 0
    device: torch.device = torch.device("cpu")
    T: Optional[int] = None
    eval_batch_size: Optional[int] = None
    workers: Optional[int] = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    options: DataOptions = field(default_factory=DataOptions)


class BatchSource(Protocol):
    """An epoch-wise iterable of ``(x, y)`` batches already on the training device."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def iter_from(self, start: int) -> Iterator[Batch]: ...

    def shard(self, rank: int, world_size: int, *, train: bool = True) -> BatchSource: ...


@dataclass
class DataBundle:
    """A data set ready for training: sources plus the facts models and methods need."""

    name: str
    train: BatchSource
    test: BatchSource
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one frame
    time_steps: Optional[int] = None  # event data: frames per sample (must equal T); None: static
    val: Optional[BatchSource] = None  # held out of the training data (esdsnn.data.validation)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def num_train(self) -> Optional[int]:
        """Training samples (None when the source does not know them up front)."""
        return _num_samples(self.train)

    @property
    def num_test(self) -> Optional[int]:
        return _num_samples(self.test)

    @property
    def num_val(self) -> int:
        return _num_samples(self.val) or 0 if self.val is not None else 0

    def facts(self) -> dict[str, object]:
        """What a run records about its data (``summary.json``)."""
        return {
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "time_steps_of_data": self.time_steps,
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_test": self.num_test,
        }

    def rebatched(self, batch_size: int) -> DataBundle:
        """The same data with training batches of ``batch_size`` (defaults sized to the data are
        chosen after it is read); evaluation keeps its batch size."""
        if not isinstance(self.train, TensorBatches):
            raise TypeError(f"the training batches of {self.name} cannot be re-batched")
        return dataclasses.replace(self, train=self.train.with_batch_size(batch_size))


def _num_samples(source: Optional[BatchSource]) -> Optional[int]:
    if source is None:
        return None
    count = getattr(source, "num_samples", None)
    return int(count) if count is not None else None


class TensorBatches:
    """Batches of in-memory tensors: a seeded permutation per epoch, sliced; augmentation on device.

    ``x`` may be uint8 (converted by ``augment``/``prepare``) or float. The permutation and the
    augmentation of epoch ``e`` depend only on ``(seed, e)``, so an epoch can be replayed or
    resumed exactly. Sharded (:meth:`shard`), every process draws the same global batch and keeps
    its slice ``rank`` of ``world_size`` near-equal slices, so the union of the slices is exactly
    the batch one process would train on; for training a last global batch too small to give every
    process two samples is dropped (BatchNorm needs more than one value), for evaluation nothing is
    dropped and a process whose slice is empty skips that batch.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        prepare: Optional[Callable[[Tensor], Tensor]] = None,
        augment: Optional[Augment] = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.prepare = prepare
        self.augment = augment
        self.epoch = 0
        self.rank, self.world_size, self.train = 0, 1, True

    def shard(self, rank: int, world_size: int, *, train: bool = True) -> TensorBatches:
        """This source's share for process ``rank`` of ``world_size`` (the tensors are shared)."""
        part = copy.copy(self)
        part.rank, part.world_size, part.train = rank, world_size, train
        return part

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        return len(self.x)

    def subset(self, index: Tensor) -> TensorBatches:
        """These batches over the samples ``index`` only (e.g. the training part of a split)."""
        index = index.to(self.x.device)
        return self.with_samples(self.x[index], self.y[index])

    def with_samples(self, x: Tensor, y: Tensor) -> TensorBatches:
        """The same batching, preparation and augmentation over other samples ``(x, y)`` (e.g.
        validation samples taken from the training set, prepared like the test set)."""
        part = copy.copy(self)
        part.x, part.y = x.to(self.device), y.to(self.device, torch.long)
        part.drop_last = self.shuffle and len(x) % self.batch_size == 1 and len(x) > 1
        return part

    def with_batch_size(self, batch_size: int) -> TensorBatches:
        """A copy with ``batch_size`` (a last batch of one sample is dropped, as at creation)."""
        part = copy.copy(self)
        part.batch_size = batch_size
        part.drop_last = self.shuffle and len(self.x) % batch_size == 1 and len(self.x) > 1
        return part

    def _global_batches(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        steps = self._global_batches()
        if self.train and self.world_size > 1 and steps:
            last = min(len(self.x) - (steps - 1) * self.batch_size, self.batch_size)
            if last < 2 * self.world_size:
                steps -= 1
        return steps

    def generator(self) -> torch.Generator:
        """The generator of the current epoch (order and augmentation draw from it)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on. The skipped batches are augmented anyway
        when there is augmentation (the generator must advance as in an unbroken epoch)."""
        gen = self.generator()
        order = torch.randperm(len(self.x), generator=gen) if self.shuffle else torch.arange(len(self.x))
        order = order.to(self.device)
        for i in range(len(self)):
            if i < start and self.augment is None:
                continue
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.augment is None:  # preparation is per sample: slice first
                idx = idx.tensor_split(self.world_size)[self.rank]
            xb, yb = self.x[idx], self.y[idx]
            if self.prepare is not None:
                xb = self.prepare(xb)
            if self.augment is not None:
                xb = self.augment(xb, gen)
                if i < start:
                    continue
                xb = xb.tensor_split(self.world_size)[self.rank]
                yb = yb.tensor_split(self.world_size)[self.rank]
            if len(yb):
                yield xb, yb


__all__ = ["Augment", "Batch", "BatchSource", "DataBundle", "DataOptions", "DataRequest", "TensorBatches"]
