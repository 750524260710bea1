"""Any labelled image set as an ``.npz`` file with ``x_train, y_train, x_test, y_test``.

Images may be uint8 (scaled by 1/255) or float (taken as they are), laid out NCHW, NHWC or, for
one channel, NHW. Each channel is then normalised with the training set's mean and std. uint8
images stay uint8 in memory and are converted batch by batch.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from esdsnn.data.base import DataBundle, DataRequest, TensorBatches
from esdsnn.errors import ConfigError, DataError, brief

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = ("NCHW", "NHWC")


def detect_layout(shape: tuple[int, ...]) -> str:
    """Guess where the channels are in a 4-D image array: the smaller of axes 1 and 3.

    ``[N, 32, 32, 3]`` is NHWC, ``[N, 3, 32, 32]`` and ``[N, 2, 128, 128]`` are NCHW; a tie
    (``[N, 8, 8, 8]``) is read as NCHW, PyTorch's layout.
    """
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D shape, got {shape}")
    return "NHWC" if shape[3] < shape[1] else "NCHW"


def _to_nchw(x: np.ndarray, layout: Optional[str], where: str) -> np.ndarray:
    if x.ndim == 3:  # [N, H, W]: one channel
        return x[:, None, :, :]
    if x.ndim != 4:
        raise DataError(
            f"{where} has shape {list(x.shape)}; expected images as [N,H,W], [N,C,H,W] or [N,H,W,C]"
        )
    layout = layout or detect_layout(x.shape)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NHWC" else x


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where} has shape {list(y.shape)}; expected one integer label per image")
    if len(y) != n:
        raise DataError(f"{where} has {len(y)} labels but there are {n} images")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where} holds non-integer labels; expected class indices 0..K-1")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where} has dtype {y.dtype}; expected integer class indices")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{where} holds negative labels; expected class indices 0..K-1")
    return y


def _images(x: np.ndarray, layout: Optional[str], where: str) -> np.ndarray:
    if x.dtype.kind not in "uifb":
        raise DataError(f"{where} has dtype {x.dtype}; expected uint8 or float images")
    x = _to_nchw(x, layout, where)
    if len(x) == 0:
        raise DataError(f"{where} holds no images")
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where} holds NaN or infinite values")
    return x


def read_npz(
    path: str | Path, layout: Optional[str] = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check an npz data set: ``(x_train, y_train, x_test, y_test)`` with x ``[N,C,H,W]``
    (uint8 kept as uint8, anything else float32) and y int64. Problems raise :class:`DataError`
    naming the file."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz data file {path} not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({brief(exc, 300, with_type=True)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a plain .npy array
        raise DataError(f"{path} holds a single array, not an .npz archive with {', '.join(REQUIRED_KEYS)}")
    with archive:
        missing = [k for k in REQUIRED_KEYS if k not in archive.files]
        if missing:
            raise DataError(
                f"{path} lacks the key(s) {', '.join(missing)}; an npz data set needs "
                f"{', '.join(REQUIRED_KEYS)} (it has: {', '.join(archive.files) or 'nothing'})"
            )
        try:
            arrays = {k: archive[k] for k in REQUIRED_KEYS}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({brief(exc, 300, with_type=True)})") from None

    x_train = _images(arrays["x_train"], layout, f"{path}: x_train")
    x_test = _images(arrays["x_test"], layout, f"{path}: x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{path}: x_train images are {list(x_train.shape[1:])} (C,H,W) but x_test images are "
            f"{list(x_test.shape[1:])}"
        )
    if x_train.dtype != x_test.dtype:
        raise DataError(f"{path}: x_train is {x_train.dtype} but x_test is {x_test.dtype}")
    y_train = _labels(arrays["y_train"], len(x_train), f"{path}: y_train")
    y_test = _labels(arrays["y_test"], len(x_test), f"{path}: y_test")
    return x_train, y_train, x_test, y_test


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of images ``[N,C,H,W]`` (uint8 read as /255), float32 ``[C]``."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        part = _to_unit(x[i : i + chunk]).double()
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = len(x) * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std)  # a constant channel: only centre it
    return mean.float(), std.float()


def _to_unit(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def normaliser(mean: Tensor, std: Tensor) -> Callable[[Tensor], Tensor]:
    """``x -> (x − mean) / std`` per channel, uint8 input scaled by 1/255 first."""
    m = mean.view(1, -1, 1, 1)
    s = std.view(1, -1, 1, 1)

    def prepare(x: Tensor) -> Tensor:
        return (_to_unit(x) - m.to(x.device)) / s.to(x.device)

    return prepare


def make_bundle(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    num_classes: int,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """In-memory images ``[N,C,H,W]`` → a :class:`DataBundle` normalised with training statistics.

    Float images are normalised once; uint8 images stay uint8 and are normalised per batch.
    """
    mean, std = channel_stats(x_train)
    prepare = normaliser(mean, std)
    if x_train.dtype != torch.uint8:
        x_train, x_test = prepare(x_train), prepare(x_test)
        prepare = None
    # A last training batch of one sample would break BatchNorm: drop it in that one case.
    drop_last = len(x_train) % batch_size == 1 and len(x_train) > 1
    train = TensorBatches(
        x_train, y_train, batch_size, shuffle=True, seed=seed, drop_last=drop_last,
        prepare=prepare, device=device,
    )
    test = TensorBatches(
        x_test, y_test, eval_batch_size or batch_size, shuffle=False, prepare=prepare, device=device
    )
    return DataBundle(
        name=name,
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in x_train.shape[1:]),  # type: ignore[arg-type]
    )


def load(request: DataRequest) -> DataBundle:
    """The ``npz`` data set: ``data_path`` names the file (static images; ``T`` is not needed)."""
    data_path = request.data_path
    if not data_path:
        raise ConfigError("the npz data set needs --data-path FILE.npz (keys x_train, y_train, x_test, y_test)")
    x_train, y_train, x_test, y_test = read_npz(data_path)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes < 2:
        raise DataError(f"{data_path}: the labels name only one class; need at least two")
    return make_bundle(
        "npz",
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        num_classes=num_classes,
        batch_size=request.batch_size,
        eval_batch_size=request.eval_batch_size,
        seed=request.seed,
        device=request.device,
    )
