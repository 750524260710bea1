"""What the training loop needs from a data set: batches on the device and a few facts.

Small data sets (digits, npz, CIFAR) live in memory as tensors; :class:`TensorBatches` slices a
seeded permutation into batches and applies batched augmentation on the device, with no workers.
Large ones (ImageNet) wrap a ``DataLoader`` behind the same interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol

import torch
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


class BatchSource(Protocol):
    """An epoch-wise iterable of ``(x, y)`` batches already on the training device."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass
class DataBundle:
    """A data set ready for training: sources plus the facts models and methods need."""

    name: str
    train: BatchSource
    test: BatchSource
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one frame
    time_steps: Optional[int] = None  # event data: frames per sample (must equal T); None: static

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]


class TensorBatches:
    """Batches of in-memory tensors: a seeded permutation per epoch, sliced; augmentation on device.

    ``x`` may be uint8 (converted by ``augment``/``prepare``) or float. The permutation of epoch
    ``e`` depends only on ``(seed, e)``, so an epoch can be replayed or resumed exactly.
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def generator(self) -> torch.Generator:
        """The generator of the current epoch (order and augmentation draw from it)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = self.generator()
        n = len(self.x)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.prepare is not None:
                xb = self.prepare(xb)
            if self.augment is not None:
                xb = self.augment(xb, gen)
            yield xb, yb
