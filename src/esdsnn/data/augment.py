"""Batched augmentation on the training device, reproducible from an explicit ``torch.Generator``.

Every random choice (crop offsets, flips, AutoAugment sub-policies, Cutout squares, NDA ops) is
drawn per sample from the generator ``TensorBatches`` passes in, on the CPU, then moved to the
device, so the same seed and epoch give the same batches on any device.

Static images (CIFAR): ``CifarAugment`` runs the official recipe's order on uint8 images — crop
with zero padding, flip, AutoAugment (the official CIFAR-10 policy with PIL's semantics,
:mod:`esdsnn.data.autoaugment`), then to float, Cutout and normalisation — and ``Normalize`` for
evaluation. Event frames (CIFAR10-DVS): ``EventAugment`` (resize, flip and one NDA op per
sample), returning time-major ``[T, B, C, H, W]``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from esdsnn.data.autoaugment import auto_augment
from esdsnn.fields import option

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations run. A switch left ``None`` takes the data set's default (the
    CIFAR recipe: all on; ``npz``: crop and flip off, since digits or text must not be flipped);
    each data set declares which switches apply to it (:func:`esdsnn.data.dataset_info`), and
    only those are recorded in a run's ``config.yaml``."""

    crop: Optional[bool] = option(None, "random crop with zero padding (default: on for CIFAR, off for npz)")
    flip: Optional[bool] = option(None, "random horizontal flip (default: on for CIFAR, off for npz)")
    autoaugment: Optional[bool] = option(None, "AutoAugment, the official CIFAR-10 policy (CIFAR; default on)")
    cutout: Optional[bool] = option(None, "Cutout, one square per image (CIFAR; default on)")
    crop_padding: int = option(4, "padding of the random crop, pixels")
    cutout_size: int = option(16, "side of the Cutout square, pixels")

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.cutout_size < 1:
            raise ValueError(f"cutout_size must be >= 1, got {self.cutout_size}")

    def with_defaults(self, defaults: Mapping[str, bool]) -> AugmentConfig:
        """A copy with each switch left ``None`` set from ``defaults`` (missing: off)."""
        return dataclasses.replace(
            self, **{name: bool(defaults.get(name, False)) for name in SWITCHES if getattr(self, name) is None}
        )


#: The on/off fields of :class:`AugmentConfig`.
SWITCHES = ("crop", "flip", "autoaugment", "cutout")
#: The CIFAR recipe's training augmentation: everything on.
CIFAR_AUGMENT = {name: True for name in SWITCHES}


# --------------------------------------------------------------------------------------------
# Per-sample random ops on whole batches [B, C, H, W]
# --------------------------------------------------------------------------------------------


def _randint(low: int, high: int, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """``n`` integers uniform in ``[low, high]`` (inclusive), drawn on the CPU."""
    return torch.randint(low, high + 1, (n,), generator=gen).to(device)


def _gather_2d(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Per-sample pixel gather: ``out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]``."""
    b = torch.arange(x.shape[0], device=x.device)[:, None, None]
    out = x.movedim(1, -1)[b, rows[:, :, None], cols[:, None, :]]  # [B, H', W', C]
    return out.movedim(-1, 1)


def random_crop(x: Tensor, gen: torch.Generator, padding: int = 4) -> Tensor:
    """Zero-pad by ``padding`` once, then crop the original size at a random offset per sample."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    dy = _randint(0, 2 * padding, n, gen, x.device)
    dx = _randint(0, 2 * padding, n, gen, x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = dx[:, None] + torch.arange(w, device=x.device)
    return _gather_2d(xp, rows, cols)


def random_flip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror the last (width) axis of each sample with probability ``p``."""
    mask = (torch.rand(x.shape[0], generator=gen) < p).to(x.device)
    mask = mask.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, x.flip(-1), x)


def cutout(x: Tensor, gen: torch.Generator, size: int = 16) -> Tensor:
    """Zero one ``size``×``size`` square per sample (Cutout): the centre is uniform over the image
    and the square is clipped at the borders. Works on ``[B, ..., H, W]``."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    cy = _randint(0, h - 1, n, gen, x.device)
    cx = _randint(0, w - 1, n, gen, x.device)
    half = size // 2
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    in_rows = (r >= (cy - half)[:, None]) & (r < (cy - half + size)[:, None])
    in_cols = (c >= (cx - half)[:, None]) & (c < (cx - half + size)[:, None])
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # [B, H, W]
    hole = hole.view(n, *([1] * (x.dim() - 3)), h, w)
    return x.masked_fill(hole, 0)


def random_roll(x: Tensor, gen: torch.Generator, max_shift: int = 5) -> Tensor:
    """Roll each sample circularly by its own ``(dy, dx)``, each uniform in ``[-max_shift, max_shift]``."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    dy = _randint(-max_shift, max_shift, n, gen, x.device)
    dx = _randint(-max_shift, max_shift, n, gen, x.device)
    rows = (torch.arange(h, device=x.device) - dy[:, None]) % h
    cols = (torch.arange(w, device=x.device) - dx[:, None]) % w
    flat = x.reshape(n, -1, h, w)
    return _gather_2d(flat, rows, cols).reshape(x.shape)


def rotation_grid(angle: float, h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """The ``grid_sample`` grid ``[1, h, w, 2]`` that turns an ``h``×``w`` image ``angle`` degrees
    counter-clockwise about its centre, built as torchvision's tensor ``rotate`` builds it: the
    inverse affine matrix of a pure rotation (``_get_inverse_affine_matrix`` with angle −``angle``:
    ``[cos r, sin r, 0; −sin r, cos r, 0]``, r = radians(−angle), in float64, then float32), applied
    to the pixel centres ``linspace(−w/2 + ½, w/2 − ½)`` × ``linspace(−h/2 + ½, h/2 − ½)`` by one
    float32 ``bmm`` with the matrix divided by the half sizes (``_gen_affine_grid``). The same
    operations in the same order, so the grid, and every nearest pixel it picks, is torchvision's."""
    r = math.radians(-angle)
    cos, sin = math.cos(r), math.sin(r)
    theta = torch.tensor([cos, sin, 0.0, -sin, cos, 0.0], dtype=torch.float32, device=device).reshape(1, 2, 3)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=device)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=device))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=device)
    return base.view(1, h * w, 3).bmm(scaled).view(1, h, w, 2)


def rotate_nearest(x: Tensor, angles: Sequence[float]) -> Tensor:
    """Turn sample b of ``x`` ``[B, C, H, W]`` (float) by ``angles[b]`` degrees counter-clockwise
    about the image centre: nearest neighbour, 0 where the turned image has no pixel, as
    torchvision's ``F.rotate`` on a tensor (``grid_sample``, ``align_corners=False``; its fill of 0
    equals the zero padding). Each grid is built alone (:func:`rotation_grid`), as torchvision
    builds it, then one ``grid_sample`` runs the batch. Tested pixel for pixel against torchvision's
    own outputs (``tests/data/fixtures``)."""
    n, _, h, w = x.shape
    if len(angles) != n:
        raise ValueError(f"{len(angles)} angles for {n} samples")
    grid = torch.cat([rotation_grid(float(a), h, w, x.device) for a in angles])
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def random_rotate(x: Tensor, gen: torch.Generator, degrees: float = 30.0) -> Tensor:
    """Rotate each sample about its centre by an angle uniform in ``[-degrees, degrees]``, as the
    official NDA's ``transforms.RandomRotation(30)`` on a tensor: nearest neighbour, zero fill,
    one angle for all frames and channels of a sample (``[B, ..., H, W]``, float)."""
    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    angles = ((torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * degrees).tolist()
    return rotate_nearest(x.reshape(n, -1, h, w), angles).reshape(x.shape)


def _channel_stats(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)


def to_unit_float(x: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]; float input is returned as float32 unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


class Normalize:
    """Deterministic evaluation transform: ``(x/255 − mean) / std`` per channel.

    Callable as ``augment(x, generator)`` (the generator is ignored) so it plugs into
    ``TensorBatches`` and the ImageNet loader alike.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: Tensor, gen: Optional[torch.Generator] = None) -> Tensor:
        x = to_unit_float(x)
        return (x - _channel_stats(self.mean, x)) / _channel_stats(self.std, x)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class CifarAugment:
    """The CIFAR training transform of the official code on a uint8 batch ``[B, 3, H, W]``:
    crop (zero padding 4) → flip → AutoAugment (official CIFAR-10 policy, per image), all on
    uint8 as on PIL images → float in [0, 1] → Cutout 16 → normalise. Each step can be switched
    off through :class:`AugmentConfig`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], config: AugmentConfig) -> None:
        self.config = config.with_defaults(CIFAR_AUGMENT)
        self.normalize = Normalize(mean, std)

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        cfg = self.config
        if cfg.crop:
            x = random_crop(x, gen, cfg.crop_padding)
        if cfg.flip:
            x = random_flip(x, gen)
        if cfg.autoaugment:
            if x.dtype != torch.uint8:
                raise TypeError(
                    "AutoAugment needs uint8 images (PIL semantics); got "
                    f"{x.dtype}: pass the images as stored, before normalising"
                )
            x = auto_augment(x, gen)
        x = to_unit_float(x)
        if cfg.cutout:
            x = cutout(x, gen, cfg.cutout_size)
        return self.normalize(x)

    def __repr__(self) -> str:
        return f"CifarAugment({self.config}, {self.normalize})"


class CropFlip:
    """The optional training augmentation of image arrays (``npz``): crop with zero padding and/or
    horizontal flip on the images as stored (zero = black, as for CIFAR), then ``prepare``
    (scaling and normalisation)."""

    def __init__(self, config: AugmentConfig, prepare: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.config = config
        self.prepare = prepare

    def __call__(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if self.config.crop:
            x = random_crop(x, gen, self.config.crop_padding)
        if self.config.flip:
            x = random_flip(x, gen)
        return self.prepare(x) if self.prepare is not None else x

    def __repr__(self) -> str:
        return f"CropFlip(crop={self.config.crop}, flip={self.config.flip}, padding={self.config.crop_padding})"


# --------------------------------------------------------------------------------------------
# Event frames: [B, T, C, H, W] in, time-major [T, B, C, H, W] out
# --------------------------------------------------------------------------------------------


def resize_frames(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of ``[B, T, C, H, W]`` frames to ``size``×``size``."""
    b, t, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    flat = F.interpolate(
        x.reshape(b, t * c, h, w), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return flat.reshape(b, t, c, size, size)


def nda(x: Tensor, gen: torch.Generator, *, roll: int = 5, degrees: float = 30.0, cutout_size: int = 16) -> Tensor:
    """Neuromorphic data augmentation: one op per sample, chosen uniformly among roll (±``roll``
    px), rotate (±``degrees``) and Cutout (``cutout_size``); the same op on all of its frames."""
    op = torch.randint(3, (x.shape[0],), generator=gen)
    ops = (
        lambda v: random_roll(v, gen, roll),
        lambda v: random_rotate(v, gen, degrees),
        lambda v: cutout(v, gen, cutout_size),
    )
    out = x.clone()
    for k, fn in enumerate(ops):
        idx = (op == k).nonzero().flatten()
        if len(idx):
            idx = idx.to(x.device)
            out[idx] = fn(x[idx])
    return out


class EventAugment:
    """Frames ``[B, T, C, H, W]`` (integer counts or float) → float ``[T, B, C, size, size]``.

    Training: resize, random horizontal flip, one NDA op per sample. Evaluation
    (``train=False``): resize only, deterministic.
    """

    def __init__(
        self, size: int = 48, *, train: bool, roll: int = 5, degrees: float = 30.0, cutout_size: int = 16
    ) -> None:
        self.size = size
        self.train = train
        self.roll = roll
        self.degrees = degrees
        self.cutout_size = cutout_size

    def __call__(self, x: Tensor, gen: Optional[torch.Generator] = None) -> Tensor:
        x = resize_frames(x.float(), self.size)
        if self.train:
            if gen is None:
                raise ValueError("EventAugment(train=True) needs a torch.Generator")
            x = random_flip(x, gen)
            x = nda(x, gen, roll=self.roll, degrees=self.degrees, cutout_size=self.cutout_size)
        return x.movedim(1, 0).contiguous()

    def __repr__(self) -> str:
        return f"EventAugment(size={self.size}, train={self.train})"


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------


def measure_loader_throughput(source: Iterable[tuple[Tensor, Tensor]], batches: int = 10, *, warmup: int = 1) -> float:
    """Samples per second a batch source delivers (loading + augmentation), median over batches.

    Skips ``warmup`` batches, then times ``batches`` batches one by one (synchronising CUDA so
    asynchronous kernels are counted) and returns the median per-batch rate. The sample count of
    a batch is ``len(y)``, so time-major event batches count samples, not frames.
    """
    if batches < 1:
        raise ValueError("batches must be at least 1")
    rates: list[float] = []
    it = iter(source)
    seen = 0
    while len(rates) < batches:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            if seen == 0:
                raise ValueError("the batch source yielded no batches") from None
            it = iter(source)  # wrap around into a new pass
            continue
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        dt = time.perf_counter() - t0
        seen += 1
        if seen > warmup:
            rates.append(len(y) / max(dt, 1e-9))
    return float(statistics.median(rates))


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentConfig",
    "CifarAugment",
    "EventAugment",
    "Normalize",
    "cutout",
    "measure_loader_throughput",
    "nda",
    "random_crop",
    "random_flip",
    "random_roll",
    "random_rotate",
    "resize_frames",
    "rotate_nearest",
    "rotation_grid",
    "to_unit_float",
]
