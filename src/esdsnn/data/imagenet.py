"""ImageNet from ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``, decoded by Pillow in workers.

The transforms are written with Pillow and NumPy (no torchvision): RandomResizedCrop + flip for
training, resize + centre crop for evaluation. A sample's random draws come from a generator
seeded by ``(seed, epoch, index)``, so they do not depend on the number of workers or on which
worker decodes it. Workers return uint8 ``[3, S, S]``; conversion to float and normalisation
happen per batch on the training device (4× less to copy).

:class:`LoaderBatches` wraps the ``DataLoader`` behind the ``BatchSource`` interface. Its sampler
comes from ``sampler_factory(dataset, shuffle=..., seed=...)`` (default: a seeded permutation per
epoch), so distributed training can pass a sharding sampler (``distributed=True`` uses
``DistributedSampler``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from esdsnn.data.augment import IMAGENET_MEAN, IMAGENET_STD, Normalize
from esdsnn.data.base import DataBundle
from esdsnn.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
SamplerFactory = Callable[..., Sampler]

_LAYOUT_HINT = ("expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ILSVRC-2012 from "
                "https://image-net.org, the validation images sorted into one folder per wnid; "
                "esdsnn never downloads)")


def _brief(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Transforms on PIL images
# --------------------------------------------------------------------------------------------


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
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
    out = img.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img: Image.Image, size: int, resize: int) -> Image.Image:
    """Resize the shorter side to ``resize`` (bilinear), then centre-crop ``size``×``size``."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    img = img.resize((new_w, new_h), Image.BILINEAR)
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
            raise DataError(f"ImageNet {split_dir} has class folder(s) not in train/: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
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

    def __init__(self, samples: Sequence[tuple[str, int]], *, train: bool, image_size: int = 224,
                 resize_size: Optional[int] = None, seed: int = 0) -> None:
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
            raise DataError(f"{path} is not a readable image (truncated or corrupt?): {_brief(exc)}")
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            img = train_transform(img, self.image_size, rng)
        else:
            img = eval_transform(img, self.image_size, self.resize_size)
        return _to_tensor(img), label


class EpochSampler(Sampler[int]):
    """All indices, in a seeded random order per epoch (or in order when ``shuffle`` is off)."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0) -> None:
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())


def default_sampler_factory(dataset: Dataset, *, shuffle: bool, seed: int) -> Sampler:
    return EpochSampler(len(dataset), shuffle=shuffle, seed=seed)  # type: ignore[arg-type]


def distributed_sampler_factory(dataset: Dataset, *, shuffle: bool, seed: int) -> Sampler:
    """Shards across the ranks of the initialised process group (``DistributedSampler``)."""
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=seed)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _one_line(exc: BaseException) -> str:
    """The original message of an error re-raised by a DataLoader worker (which adds a traceback)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last[len(prefix):] if last.startswith(prefix) else last


class LoaderBatches:
    """A ``DataLoader`` behind the ``BatchSource`` interface: ``(x, y)`` on ``device``, ``x``
    converted to float and normalised there; ``set_epoch`` reseeds shuffling and augmentation."""

    def __init__(self, loader: DataLoader, dataset: ImageFolderDataset, device: torch.device | str,
                 transform: Callable[[Tensor], Tensor]) -> None:
        self.loader = loader
        self.dataset = dataset
        self.device = torch.device(device)
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.epoch = epoch
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        non_blocking = self.device.type == "cuda"
        try:
            for x, y in self.loader:
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
    sampler_factory: Optional[SamplerFactory] = None,
) -> LoaderBatches:
    """A :class:`LoaderBatches` over image files (Pillow decoding in ``workers`` processes with
    one torch thread each)."""
    device = torch.device(device)
    dataset = ImageFolderDataset(samples, train=train, image_size=image_size, seed=seed)
    factory = sampler_factory or default_sampler_factory
    sampler = factory(dataset, shuffle=train, seed=seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        worker_init_fn=_worker_init if workers > 0 else None,
        pin_memory=device.type == "cuda", drop_last=False, persistent_workers=False,
    )
    return LoaderBatches(loader, dataset, device, Normalize(IMAGENET_MEAN, IMAGENET_STD))


def load_imagenet(
    root: str | os.PathLike,
    *,
    batch_size: int = 64,
    seed: int = 60,
    device: torch.device | str = "cpu",
    workers: int = 8,
    image_size: int = 224,
    sampler_factory: Optional[SamplerFactory] = None,
    distributed: bool = False,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """ImageNet from ``root/train/<wnid>/`` and ``root/val/<wnid>/``; class index = sorted wnid.

    ``batch_size`` is per process. ``sampler_factory(dataset, shuffle=, seed=)`` replaces the
    default seeded sampler; ``distributed=True`` shards with ``DistributedSampler``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"ImageNet not found in {root}: {_LAYOUT_HINT}")
    if sampler_factory is None and distributed:
        sampler_factory = distributed_sampler_factory
    classes, train_samples = scan_split(root / "train")
    _, val_samples = scan_split(root / "val", classes)
    common = dict(seed=seed, device=device, workers=workers, image_size=image_size,
                  sampler_factory=sampler_factory)
    return DataBundle(
        name="imagenet",
        train=imagenet_loader(train_samples, train=True, batch_size=batch_size,
                              **common),  # type: ignore[arg-type]
        test=imagenet_loader(val_samples, train=False, batch_size=eval_batch_size or batch_size,
                             **common),  # type: ignore[arg-type]
        num_classes=len(classes),
        input_shape=(3, image_size, image_size),
    )


def load(
    *,
    data_path: Optional[str],
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    T: Optional[int] = None,
    eval_batch_size: Optional[int] = None,
    workers: int = 8,
    image_size: int = 224,
    sampler_factory: Optional[SamplerFactory] = None,
    distributed: bool = False,
) -> DataBundle:
    """The ``imagenet`` entry of the data-set registry (static images; ``T`` is not needed)."""
    if not data_path:
        raise ConfigError(f"imagenet needs --data-path DIR; {_LAYOUT_HINT}")
    return load_imagenet(data_path, batch_size=batch_size, seed=seed, device=device, workers=workers,
                         image_size=image_size, sampler_factory=sampler_factory,
                         distributed=distributed, eval_batch_size=eval_batch_size)


__all__ = [
    "EpochSampler", "ImageFolderDataset", "LoaderBatches", "default_sampler_factory",
    "distributed_sampler_factory", "eval_transform", "imagenet_loader", "load", "load_imagenet",
    "random_resized_crop_box", "scan_split", "train_transform",
]
