"""CIFAR-10 and CIFAR-100 from the official "python version" files, held on the device as uint8.

Accepted layouts of ``root`` (never downloaded):

- CIFAR-10: ``cifar-10-python.tar.gz`` or the extracted ``cifar-10-batches-py/`` (``data_batch_1`` …
  ``data_batch_5``, ``test_batch``), or ``root`` being that folder or archive itself;
- CIFAR-100: ``cifar-100-python.tar.gz`` or ``cifar-100-python/`` (``train``, ``test``).

Each file is a pickled dict with ``data`` (uint8 ``[N, 3072]``, channel-major 32×32 planes) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100); keys are bytes in the official files. The
pickles are read with an unpickler that only admits NumPy arrays and plain containers.
Everything is validated while loading, so a truncated archive or pickle fails before training
with a one-line :class:`~esdsnn.errors.DataError` that names the file.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from esdsnn.data.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    AugmentConfig,
    CifarAugment,
    Normalize,
)
from esdsnn.data.base import DataBundle, DataRequest, TensorBatches
from esdsnn.errors import ConfigError, DataError, brief

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class _Layout:
    title: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS: dict[str, _Layout] = {
    "cifar10": _Layout(
        "CIFAR-10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
        CIFAR10_MEAN,
        CIFAR10_STD,
    ),
    "cifar100": _Layout(
        "CIFAR-100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        ("test",),
        "fine_labels",
        100,
        CIFAR100_MEAN,
        CIFAR100_STD,
    ),
}


# --------------------------------------------------------------------------------------------
# Reading the pickles
# --------------------------------------------------------------------------------------------

_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Loads NumPy arrays, numbers, strings, lists and dicts; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the pickle")
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # truncated or foreign data raise many different types
        raise DataError(f"{where} is not a readable CIFAR pickle (truncated or corrupt?): {brief(exc, 160)}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where} is not a CIFAR batch: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _parse_batch(obj: dict, layout: _Layout, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64 of one batch dict, checked."""
    if "data" not in obj or layout.label_key not in obj:
        raise DataError(
            f"{where} is not a {layout.title} batch: expected keys 'data' and '{layout.label_key}', "
            f"found {sorted(map(str, obj))}"
        )
    data = np.asarray(obj["data"])
    labels = np.asarray(obj[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: 'data' should be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but {labels.size} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(f"{where}: labels outside 0..{layout.num_classes - 1} (is this {layout.title}?)")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _not_found(layout: _Layout, root: Path) -> DataError:
    return DataError(
        f"{layout.title} not found in {root}: expected {layout.archive} or {layout.folder}/ "
        f"(download the python version from {CIFAR_URL}; esdsnn never downloads)"
    )


def _read_folder(folder: Path, layout: _Layout) -> dict[str, bytes]:
    wanted = layout.train_files + layout.test_files
    missing = [n for n in wanted if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{layout.title} folder {folder} is incomplete: missing {', '.join(missing)} "
            f"(expected {', '.join(wanted)}; re-extract {layout.archive} from {CIFAR_URL})"
        )
    out = {}
    for name in wanted:
        try:
            out[name] = (folder / name).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {folder / name}: {brief(exc, 160)}") from exc
    return out


def _read_archive(path: Path, layout: _Layout) -> dict[str, bytes]:
    wanted = layout.train_files + layout.test_files
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if (
                    member.isfile()
                    and parts
                    and parts[-1] in wanted
                    and (len(parts) == 1 or parts[-2] == layout.folder)
                ):
                    fh = tar.extractfile(member)
                    if fh is not None:
                        out[parts[-1]] = fh.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"cannot read the archive {path} (truncated or corrupt? download it again from "
            f"{CIFAR_URL}): {brief(exc, 160)}"
        ) from exc
    missing = [n for n in wanted if n not in out]
    if missing:
        raise DataError(
            f"archive {path} lacks {', '.join(layout.folder + '/' + n for n in missing)} "
            f"(is it the python version of {layout.title}?)"
        )
    return out


def _locate(root: Path, layout: _Layout) -> tuple[str, Path]:
    """``("folder", dir)`` or ``("archive", file)`` for the data under ``root``."""
    if root.is_file():
        return "archive", root
    if not root.is_dir():
        raise _not_found(layout, root)
    first = layout.train_files[0]
    if (root / first).exists() or root.name == layout.folder:
        return "folder", root
    if (root / layout.folder).is_dir():
        return "folder", root / layout.folder
    if (root / layout.archive).is_file():
        return "archive", root / layout.archive
    raise _not_found(layout, root)


def read_cifar(name: str, root: str | os.PathLike) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Read and check CIFAR-10/100 from ``root``: ``(x_train, y_train, x_test, y_test)`` with
    uint8 images ``[N, 3, 32, 32]`` in file order and int64 labels."""
    layout = _layout(name)
    root = Path(root).expanduser()
    kind, path = _locate(root, layout)
    raw = _read_folder(path, layout) if kind == "folder" else _read_archive(path, layout)

    def where(member: str) -> str:
        return str(path / member) if kind == "folder" else f"{path}:{layout.folder}/{member}"

    def stack(files: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        parts = [_parse_batch(_unpickle(raw[f], where(f)), layout, where(f)) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    x_train, y_train = stack(layout.train_files)
    x_test, y_test = stack(layout.test_files)
    return x_train, y_train, x_test, y_test


def _layout(name: str) -> _Layout:
    key = name.lower().replace("-", "")
    if key not in LAYOUTS:
        raise DataError(f"unknown CIFAR variant {name!r}: use 'cifar10' or 'cifar100'")
    return LAYOUTS[key]


# --------------------------------------------------------------------------------------------
# Bundles
# --------------------------------------------------------------------------------------------


def cifar_bundle_from_tensors(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    augment: Optional[AugmentConfig] = None,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """A CIFAR-style bundle from uint8 ``[N, 3, H, W]`` tensors (also used by benchmarks on
    synthetic data): seeded shuffled training batches with the recipe's augmentation, and
    deterministic, normalised test batches."""
    layout = _layout(name)
    config = augment if augment is not None else AugmentConfig()
    train_tf: Callable[[Tensor, torch.Generator], Tensor] = CifarAugment(layout.mean, layout.std, config)
    test_tf = Normalize(layout.mean, layout.std)
    train = TensorBatches(x_train, y_train, batch_size, shuffle=True, seed=seed, augment=train_tf, device=device)
    test = TensorBatches(
        x_test, y_test, eval_batch_size or batch_size, shuffle=False, seed=seed, augment=test_tf, device=device
    )
    return DataBundle(
        name=name.lower().replace("-", ""),
        train=train,
        test=test,
        num_classes=layout.num_classes,
        input_shape=(int(x_train.shape[1]), int(x_train.shape[2]), int(x_train.shape[3])),
    )


def load_cifar(
    name: str,
    root: str | os.PathLike,
    *,
    batch_size: int = 128,
    seed: int = 60,
    device: torch.device | str = "cpu",
    augment: Optional[AugmentConfig] = None,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from the official python
    version under ``root``, on ``device``, with the recipe's training augmentation
    (``augment``: which steps run; default all) and normalisation-only evaluation."""
    x_train, y_train, x_test, y_test = read_cifar(name, root)
    return cifar_bundle_from_tensors(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        batch_size=batch_size,
        seed=seed,
        device=device,
        augment=augment,
        eval_batch_size=eval_batch_size,
    )


def _load_registered(name: str, request: DataRequest) -> DataBundle:
    if not request.data_path:
        layout = LAYOUTS[name]
        raise ConfigError(
            f"{name} needs --data-path DIR holding {layout.archive} or {layout.folder}/ "
            f"(the python version from {CIFAR_URL})"
        )
    return load_cifar(
        name,
        request.data_path,
        batch_size=request.batch_size,
        seed=request.seed,
        device=request.device,
        augment=request.augment,
        eval_batch_size=request.eval_batch_size,
    )


def load_cifar10(request: DataRequest) -> DataBundle:
    """The ``cifar10`` entry of the data-set registry (static images; ``T`` is not needed)."""
    return _load_registered("cifar10", request)


def load_cifar100(request: DataRequest) -> DataBundle:
    """The ``cifar100`` entry of the data-set registry (static images; ``T`` is not needed)."""
    return _load_registered("cifar100", request)


__all__ = [
    "CIFAR_URL",
    "LAYOUTS",
    "cifar_bundle_from_tensors",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "read_cifar",
]
