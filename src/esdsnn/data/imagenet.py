"""ImageNet from ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``, decoded by Pillow in workers.

The transforms are written with Pillow and NumPy (no torchvision): RandomResizedCrop + flip for
training, resize + centre crop for evaluation. A sample's random draws come from a generator
seeded by ``(seed, epoch, index)``, so they do not depend on the number of workers or on which
worker decodes it. Workers return uint8 ``[3, S, S]``; conversion to float and normalisation
happen per batch on the training device (4× less to copy).

:class:`LoaderBatches` puts the files behind the ``BatchSource`` interface: a seeded permutation
per epoch (:class:`EpochSampler`), sharded over processes and started mid-epoch by the sampler
itself, so a resumed epoch decodes only the images it still needs.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from esdsnn.data.augment import IMAGENET_MEAN, IMAGENET_STD, Normalize
from esdsnn.data.base import DataBundle, DataRequest
from esdsnn.errors import ConfigError, DataError, brief

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

_LAYOUT_HINT = (
    "expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ILSVRC-2012 from "
    "https://image-net.org, the validation images sorted into one folder per wnid; "
    "esdsnn never downloads)"
)


# --------------------------------------------------------------------------------------------
# Transforms on PIL images
# --------------------------------------------------------------------------------------------


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` box of a RandomResizedCrop: area fraction uniform in
    ``scale``, log aspect ratio uniform in ``log(ratio)``, 10 tries, then a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def train_transform(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """RandomResizedCrop to ``size``×``size`` (bilinear) and a horizontal flip with p = 0.5."""
    box = random_resized_crop_box(img.width, img.height, rng)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Resize the shorter side to ``resize`` (bilinear), then centre-crop ``size``×``size``."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _to_tensor(img: Image.Image) -> Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Files and data set
# --------------------------------------------------------------------------------------------


def _images_in(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


def scan_split(split_dir: Path, classes: Optional[Sequence[str]] = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (sorted wnids, or ``classes`` if given) and ``(path, label)`` samples of one split."""
    if not split_dir.is_dir():
        raise DataError(f"ImageNet not found: {split_dir} is missing; {_LAYOUT_HINT}")
    with os.scandir(split_dir) as it:
        entries = list(it)
    wnids = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not wnids:
        loose = sum(1 for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        extra = f" (found {loose} loose images: sort them into one folder per wnid)" if loose else ""
        raise DataError(f"ImageNet {split_dir} has no class folders{extra}; {_LAYOUT_HINT}")
    if classes is None:
        classes = wnids
    else:
        unknown = sorted(set(wnids) - set(classes))
        if unknown:
            raise DataError(
                f"ImageNet {split_dir} has class folder(s) not in train/: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
            )
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for wnid in wnids:
        folder = split_dir / wnid
        samples += [(str(folder / name), index[wnid]) for name in _images_in(str(folder))]
    if not samples:
        raise DataError(f"ImageNet {split_dir} holds no images (*.JPEG); {_LAYOUT_HINT}")
    return list(classes), samples


class ImageFolderDataset(Dataset):
    """``(uint8 [3, S, S], label)`` samples of image files, decoded and transformed by Pillow.

    ``train=True``: RandomResizedCrop + flip, drawn from a generator seeded by
    ``(seed, epoch, index)``; set :attr:`epoch` before an epoch's workers start.
    ``train=False``: resize + centre crop, deterministic.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        *,
        train: bool,
        image_size: int = 224,
        resize_size: Optional[int] = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.train = train
        self.image_size = image_size
        self.resize_size = resize_size if resize_size is not None else int(round(image_size * 256 / 224))
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path} is not a readable image (truncated or corrupt?): {brief(exc, 160)}") from exc
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            img = train_transform(img, self.image_size, rng)
        else:
            img = eval_transform(img, self.image_size, self.resize_size)
        return _to_tensor(img), label


class EpochSampler(Sampler[int]):
    """One process's indices of one epoch: all indices in a seeded random order per epoch (in
    order when ``shuffle`` is off), sharded ``rank::world_size`` and started at ``start``.

    With ``pad`` (training) the order is padded with its own first indices to a multiple of
    ``world_size``, so every process gets as many samples (and steps); without it (evaluation)
    every sample is seen exactly once over all processes.
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        start: int = 0,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size, self.pad, self.start = rank, world_size, pad, start
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.n))
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        if self.pad and self.world_size > 1 and self.n % self.world_size:
            order += order[: self.world_size - self.n % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        total = -(-self.n // self.world_size) if self.pad else len(range(self.rank, self.n, self.world_size))
        return max(total - self.start, 0)

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.start :])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _one_line(exc: BaseException) -> str:
    """The original message of an error re-raised by a DataLoader worker (which adds a traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


class LoaderBatches:
    """Image files behind the ``BatchSource`` interface: a ``DataLoader`` per epoch over an
    :class:`EpochSampler`, ``(x, y)`` on ``device``, ``x`` converted to float and normalised there.

    ``batch_size`` is the global batch; sharded over ``world_size`` processes each takes
    ``batch_size / world_size`` samples a step. ``iter_from(step)`` starts mid-epoch without
    decoding the skipped images.
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device | str,
        workers: int,
        transform: Callable[[Tensor], Tensor],
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.workers = workers
        self.transform = transform
        self.epoch = 0
        self.rank, self.world_size, self.train = 0, 1, shuffle

    def shard(self, rank: int, world_size: int, *, train: bool = True) -> LoaderBatches:
        if self.batch_size % world_size:
            raise ConfigError(f"batch_size {self.batch_size} must divide evenly over {world_size} processes")
        part = copy.copy(self)
        part.rank, part.world_size, part.train = rank, world_size, train
        return part

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.epoch = epoch

    def _sampler(self, start_sample: int = 0) -> EpochSampler:
        sampler = EpochSampler(
            len(self.dataset),
            shuffle=self.shuffle,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.train,
            start=start_sample,
        )
        sampler.set_epoch(self.epoch)
        return sampler

    @property
    def per_process_batch(self) -> int:
        return self.batch_size // self.world_size

    def __len__(self) -> int:
        return -(-len(self._sampler()) // self.per_process_batch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_size=self.per_process_batch,
            sampler=self._sampler(start * self.per_process_batch),
            num_workers=self.workers,
            worker_init_fn=_worker_init if self.workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            persistent_workers=False,
        )
        non_blocking = self.device.type == "cuda"
        try:
            for x, y in loader:
                x = x.to(self.device, non_blocking=non_blocking)
                yield self.transform(x), y.to(self.device, non_blocking=non_blocking)
        except DataError as exc:
            raise DataError(_one_line(exc)) from None


def imagenet_loader(
    samples: Sequence[tuple[str, int]],
    *,
    train: bool,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    workers: int,
    image_size: int = 224,
) -> LoaderBatches:
    """A :class:`LoaderBatches` over image files (Pillow decoding in ``workers`` processes with
    one torch thread each)."""
    dataset = ImageFolderDataset(samples, train=train, image_size=image_size, seed=seed)
    return LoaderBatches(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        seed=seed,
        device=device,
        workers=workers,
        transform=Normalize(IMAGENET_MEAN, IMAGENET_STD),
    )


def load_imagenet(
    root: str | os.PathLike,
    *,
    batch_size: int = 64,
    seed: int = 60,
    device: torch.device | str = "cpu",
    workers: int = 8,
    image_size: int = 224,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """ImageNet from ``root/train/<wnid>/`` and ``root/val/<wnid>/``; class index = sorted wnid.
    ``batch_size`` is the global batch (see :class:`LoaderBatches`)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"ImageNet not found in {root}: {_LAYOUT_HINT}")
    classes, train_samples = scan_split(root / "train")
    _, val_samples = scan_split(root / "val", classes)
    common: dict[str, Any] = dict(seed=seed, device=device, workers=workers, image_size=image_size)
    return DataBundle(
        name="imagenet",
        train=imagenet_loader(train_samples, train=True, batch_size=batch_size, **common),
        test=imagenet_loader(val_samples, train=False, batch_size=eval_batch_size or batch_size, **common),
        num_classes=len(classes),
        input_shape=(3, image_size, image_size),
    )


def load(request: DataRequest) -> DataBundle:
    """The ``imagenet`` entry of the data-set registry (static images; ``T`` is not needed)."""
    if not request.data_path:
        raise ConfigError(f"imagenet needs --data-path DIR; {_LAYOUT_HINT}")
    return load_imagenet(
        request.data_path,
        batch_size=request.batch_size,
        seed=request.seed,
        device=request.device,
        workers=8 if request.workers is None else request.workers,
        eval_batch_size=request.eval_batch_size,
    )


__all__ = [
    "EpochSampler",
    "ImageFolderDataset",
    "LoaderBatches",
    "eval_transform",
    "imagenet_loader",
    "load",
    "load_imagenet",
    "random_resized_crop_box",
    "scan_split",
    "train_transform",
]
