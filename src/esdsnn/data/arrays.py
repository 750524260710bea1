"""Any labelled image or event set as an ``.npz`` file with ``x_train, y_train, x_test, y_test``.

Static images may be uint8 (scaled by 1/255) or float (taken as they are), laid out NCHW, NHWC
or, for one channel, NHW; each channel is then normalised with the training set's mean and std.
Event data comes as frames ``[N, T, C, H, W]`` (counts or any float values, taken as they are;
T must equal the run's T). uint8 arrays stay uint8 in memory and are converted batch by batch.
Labels must be the integers ``0..K−1``, every class present in the training set
(:func:`check_labels`): anything else is refused with the values and the fix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from esdsnn.data.augment import AugmentConfig, CropFlip
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
    if x.ndim == 5:  # [N, T, C, H, W]: event frames
        return x
    if x.ndim != 4:
        raise DataError(
            f"{where} has shape {list(x.shape)}; expected images as [N,H,W], [N,C,H,W] or [N,H,W,C], "
            f"or event frames as [N,T,C,H,W]"
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
        raise DataError(
            f"{where} holds negative labels ({_values(np.unique(y[y < 0]))}); expected class "
            f"indices 0..K-1 (remap them, e.g. with np.unique(y, return_inverse=True))"
        )
    return y


def _values(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_labels(y_train: np.ndarray, y_test: np.ndarray, where: str) -> int:
    """The number of classes K of integer labels that are exactly ``0..K−1`` with every class in
    the training set; anything else (a gap such as labels 1..10, a class only in the test set,
    fewer training samples than two per class on average) raises :class:`DataError` naming the values and
    the fix. A label 99 among 0..9 would otherwise silently make a 100-class head."""
    present = np.unique(y_train)
    if len(present) < 2:
        raise DataError(f"{where}: y_train names only one class ({_values(present)}); need at least two")
    k = int(present[-1]) + 1
    missing = np.setdiff1d(np.arange(k), present)
    if len(missing):
        hint = (
            "subtract 1 from every label (y - 1)"
            if present[0] == 1 and len(missing) == 1
            else "remap them to 0..K-1, e.g. y = np.unique(y_train, return_inverse=True)[1]"
        )
        raise DataError(
            f"{where}: labels must be 0..K-1 with every class in the training set, but y_train holds "
            f"{_values(present)} and lacks {_values(missing)}; {hint}"
        )
    unseen = np.setdiff1d(np.unique(y_test), present)
    if len(unseen):
        raise DataError(
            f"{where}: y_test holds label(s) {_values(unseen)} that no training sample has (training "
            f"labels are 0..{k - 1}); every test class must be in the training set"
        )
    if len(y_train) < 2 * k:
        raise DataError(
            f"{where}: {len(y_train)} training samples for {k} classes; need at least two per class ({2 * k})"
        )
    return k


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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with files / an empty one
_NPY_MAGIC = b"\x93NUMPY"


def _check_magic(path: Path) -> None:
    """Refuse a file that is neither a zip archive (.npz) nor a .npy array before numpy reads it:
    numpy would take it for a pickle and suggest ``allow_pickle``, which is never the fix here."""
    try:
        with path.open("rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head.startswith(_ZIP_MAGIC) and head != _NPY_MAGIC:
        raise DataError(
            f"{path} is not an .npz file (it does not start as a zip archive); write the data set with "
            f"numpy.savez(path, {'=..., '.join(REQUIRED_KEYS)}=...)"
        )


def read_npz(path: str | Path, layout: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and check an npz data set: ``(x_train, y_train, x_test, y_test)`` with x ``[N,C,H,W]``
    (event frames: ``[N,T,C,H,W]``; uint8 kept as uint8, anything else float32) and y int64.
    Problems raise :class:`DataError` naming the file."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)} or None, got {layout!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz data file {path} not found" + (" (it is a directory)" if path.is_dir() else ""))
    _check_magic(path)
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
        except ValueError as exc:
            if "pickle" not in str(exc):
                raise DataError(f"{path} is not a readable .npz file ({brief(exc, 300, with_type=True)})") from None
            raise DataError(
                f"{path} holds arrays of Python objects, which esdsnn never unpickles; save numeric "
                f"arrays (numpy.savez with uint8 or float images and integer labels)"
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({brief(exc, 300, with_type=True)})") from None

    x_train = _images(arrays["x_train"], layout, f"{path}: x_train")
    x_test = _images(arrays["x_test"], layout, f"{path}: x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        axes = "(T,C,H,W)" if x_train.ndim == 5 else "(C,H,W)"
        raise DataError(
            f"{path}: x_train samples are {list(x_train.shape[1:])} {axes} but x_test samples are "
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
    augment: Optional[AugmentConfig] = None,
) -> DataBundle:
    """In-memory images ``[N,C,H,W]`` → a :class:`DataBundle` normalised with training statistics,
    or event frames ``[N,T,C,H,W]`` → time-major batches ``[T,B,C,H,W]`` taken as they are.

    Float images are normalised once; uint8 images stay uint8 and are normalised per batch.
    ``augment``: crop and/or flip of the training images (static images only; off when None).
    """
    events = x_train.dim() == 5
    crop_flip = augment is not None and bool(augment.crop or augment.flip)
    if events:
        if crop_flip:
            raise ConfigError(
                f"{name}: crop and flip apply to static images only, not to event frames "
                f"[N,T,C,H,W]; drop --crop/--flip"
            )
        prepare: Optional[Callable[[Tensor], Tensor]] = _time_major
    else:
        mean, std = channel_stats(x_train)
        prepare = normaliser(mean, std)
        if x_train.dtype != torch.uint8 and not crop_flip:
            x_train, x_test = prepare(x_train), prepare(x_test)
            prepare = None
    # A last training batch of one sample would break BatchNorm: drop it in that one case.
    drop_last = len(x_train) % batch_size == 1 and len(x_train) > 1
    train = TensorBatches(
        x_train,
        y_train,
        batch_size,
        shuffle=True,
        seed=seed,
        drop_last=drop_last,
        prepare=None if crop_flip else prepare,
        augment=CropFlip(augment, prepare) if crop_flip and augment is not None else None,
        device=device,
    )
    test = TensorBatches(x_test, y_test, eval_batch_size or batch_size, shuffle=False, prepare=prepare, device=device)
    shape = x_train.shape[2:] if events else x_train.shape[1:]
    return DataBundle(
        name=name,
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]  # (C, H, W): three dims here
        time_steps=int(x_train.shape[1]) if events else None,
    )


def _time_major(x: Tensor) -> Tensor:
    """A batch of event samples ``[B, T, C, H, W]`` as the passes take it, ``[T, B, C, H, W]`` float."""
    return x.float().transpose(0, 1)


def load(request: DataRequest) -> DataBundle:
    """The ``npz`` data set: ``data_path`` names the file (static images, or event frames with T
    frames per sample)."""
    data_path = request.data_path
    if not data_path:
        raise ConfigError("the npz data set needs --data-path FILE.npz (keys x_train, y_train, x_test, y_test)")
    x_train, y_train, x_test, y_test = read_npz(data_path)
    num_classes = check_labels(y_train, y_test, str(data_path))
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
        augment=request.augment,
    )
