"""CIFAR10-DVS from the original release: AEDAT 2.0 event files → cached frame counts → batches.

``root`` holds the 10 class folders (airplane … truck) of ``*.aedat`` files, recorded with a
DVS128. Each file is read with a small vectorised NumPy reader of DVS128 addresses
(:func:`read_aedat2`, the layout SpikingJelly's reader uses), its N events are split into T slices
of equal count and counted per (polarity, y, x) into ``[T, 2, 128, 128]`` frames
(:func:`events_to_frames`). The conversion runs once per T, in parallel over files, and is cached
next to the data::

    <root>/.esdsnn_cache/split.json            stratified 90/10 split per class (fixed seed)
    <root>/.esdsnn_cache/T{T}/manifest.json    T, decoder version, file list, source sizes
    <root>/.esdsnn_cache/T{T}/<class>/<name>.npz  one compressed array per sample (+ decoder version)

Each ``.npz`` is written atomically, so an interrupted conversion resumes where it stopped; a
different T uses a different folder; samples made by another decoder version
(:data:`DECODER_VERSION`) are converted again, never reused. Batches are time-major ``[T, B, 2, 48, 48]`` floats: resized
on the device, with a random flip and one NDA op per training sample.
"""
from __future__ import annotations

import json
import os
import random
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import BinaryIO, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from esdsnn.atomic import atomic_write, write_json_atomic
from esdsnn.data.augment import EventAugment
from esdsnn.data.base import DataBundle, DataRequest, TensorBatches
from esdsnn.errors import ConfigError, DataError, brief, notice

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR = 128
CACHE_DIRNAME = ".esdsnn_cache"
CACHE_FORMAT = 1
# Version of the event decoder the cached frames were made with; a cache of another version is
# rebuilt. 1: DAVIS240 address masks (wrong for CIFAR10-DVS: every event in column 127);
# 2: DVS128 addresses.
DECODER_VERSION = 2
DVS128_ADDRESS_MASK = 0x7FFF  # x: bits 1-7, y: bits 8-14, polarity: bit 0
SPLIT_SEED = 60
TEST_FRACTION = 0.1
DVS_URL = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"


# --------------------------------------------------------------------------------------------
# AEDAT 2.0 → events → frames
# --------------------------------------------------------------------------------------------


def read_aedat2(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events ``(x, y, p, t)`` of a CIFAR10-DVS AEDAT 2.0 file, in file order.

    ``#`` header lines (the release starts with ``#!AER-DAT2.0``), then big-endian uint32 pairs
    (address, timestamp µs). The recordings were made with a DVS128, so the addresses are DVS128
    addresses: ``x_raw = (a & 0xFE) >> 1``, ``y_raw = (a & 0x7F00) >> 8``, ``p_raw = a & 0x1``;
    image coordinates ``x = 127 − y_raw``, ``y = 127 − x_raw``, polarity ``p = 1 − p_raw``
    (as SpikingJelly's ``CIFAR10DVS.load_origin_data`` reads them). Raises :class:`DataError`
    naming the file when it is truncated (not whole address/timestamp pairs), holds no events,
    or has address bits set above bit 14 (not a DVS128 recording: a DAVIS file, or corrupt).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {brief(exc, 160)}")
    start = 0
    while start < len(raw) and raw[start : start + 1] == b"#":
        end = raw.find(b"\n", start)
        if end < 0:
            raise DataError(f"{path}: header line never ends (not an AEDAT 2.0 file, or truncated)")
        start = end + 1
    payload = len(raw) - start
    if payload % 8:
        what = ("an odd number of uint32 words" if payload % 4 == 0
                else f"{payload} bytes, not whole uint32 words")
        raise DataError(
            f"{path} is truncated or corrupt: its event payload holds {what} "
            "(AEDAT 2.0 events are (address, timestamp) pairs of 8 bytes)"
        )
    if payload == 0:
        raise DataError(f"{path} holds no events (truncated or not an AEDAT 2.0 file?)")
    words = np.frombuffer(raw, dtype=">u4", offset=start).reshape(-1, 2)
    addr, ts = words[:, 0], words[:, 1]
    foreign = addr & ~np.uint32(DVS128_ADDRESS_MASK)
    if foreign.any():
        bad = int(np.count_nonzero(foreign))
        first = int(addr[np.flatnonzero(foreign)[0]])
        raise DataError(
            f"{path}: {bad} of {len(addr)} event addresses have bits set above bit 14 (first "
            f"0x{first:08X}): not a DVS128 recording as CIFAR10-DVS holds (a DAVIS file, or corrupt)"
        )
    x_raw = (addr & 0xFE) >> 1
    y_raw = (addr & 0x7F00) >> 8
    p_raw = addr & 0x1
    x = (SENSOR - 1 - y_raw).astype(np.int64)
    y = (SENSOR - 1 - x_raw).astype(np.int64)
    p = (1 - p_raw.astype(np.int64))
    return x, y, p, ts.astype(np.int64)


def events_to_frames(x: np.ndarray, y: np.ndarray, p: np.ndarray, T: int,
                     size: int = SENSOR) -> np.ndarray:
    """Event counts ``[T, 2, size, size]`` (int64): slice j holds events
    ``[⌊N/T⌋·j, ⌊N/T⌋·(j+1))`` and the last slice runs up to N."""
    n = len(x)
    q = n // T
    i = np.arange(n)
    t = np.minimum(i // q, T - 1) if q > 0 else np.full(n, T - 1)
    flat = ((t * 2 + p) * size + y) * size + x
    return np.bincount(flat, minlength=T * 2 * size * size).reshape(T, 2, size, size)


def _smallest_uint(frames: np.ndarray) -> np.ndarray:
    top = int(frames.max()) if frames.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return frames.astype(dtype)
    return frames


def convert_file(src: str, dst: str, T: int) -> int:
    """Convert one AEDAT file into a compressed ``.npz`` of frames (the smallest unsigned dtype
    that holds the counts), written atomically. Returns the number of events."""
    x, y, p, _ = read_aedat2(src)
    frames = _smallest_uint(events_to_frames(x, y, p, T))
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst_path, "wb") as fh:
        _write_npz(fh, frames=frames, src_size=np.int64(os.path.getsize(src)), T=np.int64(T),
                   decoder=np.int64(DECODER_VERSION))
    return len(x)


def _write_npz(fh: BinaryIO, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` (``np.load`` reads it), at deflate level 1: frames of event
    counts are mostly zeros, and level 1 is ~3× faster than the default at a similar size."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _convert_job(args: tuple[str, str, int]) -> tuple[str, int]:
    src, dst, T = args
    return src, convert_file(src, dst, T)


# --------------------------------------------------------------------------------------------
# Files, split, cache
# --------------------------------------------------------------------------------------------


def list_files(root: Path) -> list[tuple[str, int]]:
    """``(relative path, label)`` of every ``*.aedat`` under the class folders, sorted."""
    if not root.is_dir():
        raise DataError(
            f"CIFAR10-DVS not found in {root}: expected the 10 class folders "
            f"({', '.join(CLASSES)}) of *.aedat files (AEDAT 2.0, download the original release "
            f"from {DVS_URL}; esdsnn never downloads)"
        )
    missing = [c for c in CLASSES if not (root / c).is_dir()]
    if missing:
        raise DataError(
            f"CIFAR10-DVS not found in {root}: missing class folder(s) {', '.join(missing)} "
            f"(expected {', '.join(CLASSES)}, each with *.aedat files from {DVS_URL})"
        )
    files = []
    for label, cls in enumerate(CLASSES):
        names = sorted(f.name for f in (root / cls).iterdir()
                       if f.is_file() and f.suffix.lower() == ".aedat")
        if not names:
            raise DataError(f"CIFAR10-DVS class folder {root / cls} holds no *.aedat files")
        files += [(f"{cls}/{n}", label) for n in names]
    return files


def stratified_split(files: Sequence[tuple[str, int]], seed: int = SPLIT_SEED,
                     test_fraction: float = TEST_FRACTION) -> tuple[list[str], list[str]]:
    """Per class, ``round(test_fraction · n)`` files (at least one when n ≥ 2) go to the test
    set, chosen by a seeded shuffle; the rest train (900/100 per class on the full release)."""
    rng = random.Random(seed)
    by_class: dict[int, list[str]] = {}
    for rel, label in files:
        by_class.setdefault(label, []).append(rel)
    train, test = [], []
    for label in sorted(by_class):
        names = sorted(by_class[label])
        rng.shuffle(names)
        n_test = int(round(test_fraction * len(names)))
        if len(names) >= 2:
            n_test = min(max(n_test, 1), len(names) - 1)
        else:
            n_test = 0
        test += sorted(names[:n_test])
        train += sorted(names[n_test:])
    return train, test


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, obj)


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_split(cache: Path, files: Sequence[tuple[str, int]], seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """The saved split if it covers exactly the present files with this seed, else a new one
    (saved to ``<cache>/split.json``)."""
    path = cache / "split.json"
    saved = _read_json(path)
    present = {rel for rel, _ in files}
    if saved and saved.get("seed") == seed and set(saved.get("train", [])) | set(saved.get("test", [])) == present \
            and not set(saved["train"]) & set(saved["test"]):
        return list(saved["train"]), list(saved["test"])
    train, test = stratified_split(files, seed)
    _write_json(path, {"seed": seed, "test_fraction": TEST_FRACTION, "classes": list(CLASSES),
                       "train": train, "test": test})
    return train, test


def _cached_decoder(npz: Path, src_size: int, T: int) -> Optional[int]:
    """The decoder version of a cached sample made from this source (size) with this T, ``1``
    for samples written before versions were recorded, ``None`` when missing or unusable."""
    try:
        with np.load(npz) as z:
            if int(z["src_size"]) != src_size or int(z["T"]) != T:
                return None
            return int(z["decoder"]) if "decoder" in z.files else 1
    except Exception:
        return None


def build_cache(root: str | os.PathLike, T: int, *, workers: int = 4,
                cache_dir: Optional[str | os.PathLike] = None, progress: bool = True) -> Path:
    """Convert every AEDAT file under ``root`` to frames with T slices, once; returns the
    folder ``<cache>/T{T}``. Files already converted by this decoder version (same source size)
    are skipped, so an interrupted run resumes; samples made by another decoder version are
    converted again, with a notice. ``workers`` processes convert in parallel (0: here)."""
    if T < 1:
        raise DataError(f"T must be at least 1, got {T}")
    root = Path(root).expanduser()
    files = list_files(root)
    cache = _cache_root(root, cache_dir)
    out = cache / f"T{T}"
    sizes = {rel: (root / rel).stat().st_size for rel, _ in files}
    listing = [{"path": rel, "label": lab, "size": sizes[rel]} for rel, lab in files]
    manifest = _read_json(out / "manifest.json")
    if manifest and manifest.get("format") == CACHE_FORMAT and manifest.get("T") == T and \
            manifest.get("decoder") == DECODER_VERSION and manifest.get("files") == listing \
            and all((out / _npz_name(rel)).is_file() for rel, _ in files):
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the frame cache {out}: {brief(exc, 160)} "
                        "(pass cache_dir= a writable folder)")
    versions = {rel: _cached_decoder(out / _npz_name(rel), sizes[rel], T) for rel, _ in files}
    outdated = sorted({v for v in versions.values() if v not in (None, DECODER_VERSION)})
    if manifest and manifest.get("decoder", 1) != DECODER_VERSION:
        outdated = sorted(set(outdated) | {manifest.get("decoder", 1)})
    if outdated:
        notice(f"the CIFAR10-DVS frame cache in {out} was made by event decoder version "
                f"{', '.join(map(str, outdated))} (DAVIS240 address masks, which misplace every "
                f"CIFAR10-DVS event); rebuilding it with version {DECODER_VERSION} (DVS128 addresses)")
    todo = [(str(root / rel), str(out / _npz_name(rel)), T) for rel, _ in files
            if versions[rel] != DECODER_VERSION]
    if todo:
        bar = tqdm(total=len(todo), desc=f"CIFAR10-DVS -> frames (T={T})", unit="file",
                   disable=not progress)
        try:
            for _ in _run_jobs(todo, workers):
                bar.update(1)
        finally:
            bar.close()
    _write_json(out / "manifest.json", {
        "format": CACHE_FORMAT, "decoder": DECODER_VERSION, "T": T, "sensor": SENSOR,
        "root": str(root), "files": listing,
    })
    return out


def _run_jobs(todo: list[tuple[str, str, int]], workers: int) -> Iterable[tuple[str, int]]:
    if workers <= 0 or len(todo) == 1:
        for job in todo:
            yield _convert_job(job)
        return
    # The workers run NumPy and zlib only (never torch or CUDA), so forking is safe, as for
    # DataLoader workers, and avoids re-importing torch in every worker; spawn where no fork.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context(method))
    try:
        futures = [pool.submit(_convert_job, job) for job in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        # on an error (a corrupt file), stop at once instead of converting the rest first
        pool.shutdown(wait=True, cancel_futures=True)


def _npz_name(rel: str) -> str:
    return str(Path(rel).with_suffix(".npz"))


def _cache_root(root: Path, cache_dir: Optional[str | os.PathLike]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else root / CACHE_DIRNAME


def load_frames(cache_T: Path, rels: Sequence[str], progress: bool = True) -> Tensor:
    """Stack the cached frames of ``rels`` into one integer tensor ``[N, T, 2, 128, 128]`` of the
    smallest dtype that holds every count."""
    out: Optional[np.ndarray] = None
    for i, rel in enumerate(tqdm(rels, desc="loading frames", unit="file", disable=not progress)):
        path = cache_T / _npz_name(rel)
        try:
            with np.load(path) as z:
                frames = z["frames"]
        except Exception as exc:
            raise DataError(f"frame cache file {path} is unreadable ({brief(exc, 160)}); delete it and rerun")
        if out is None:
            out = np.zeros((len(rels),) + frames.shape, np.uint8)
        elif frames.shape != out.shape[1:]:
            raise DataError(f"frame cache file {path} has shape {frames.shape}, expected "
                            f"{out.shape[1:]}; delete {cache_T} and rerun")
        top = int(frames.max())
        if top > np.iinfo(out.dtype).max:  # rare: widen once (uint8 -> int16 -> int32)
            out = out.astype(np.int16 if top <= np.iinfo(np.int16).max else np.int32)
        out[i] = frames
    if out is None:
        out = np.zeros((0, 1, 2, SENSOR, SENSOR), np.uint8)
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------
# Bundle
# --------------------------------------------------------------------------------------------


def dvs_bundle_from_frames(
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    size: int = 48,
    num_classes: int = len(CLASSES),
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """An event bundle from frames ``[N, T, 2, H, W]`` (also used by benchmarks on synthetic
    frames): batches are float ``[T, B, 2, size, size]``."""
    T = int(x_train.shape[1])
    train = TensorBatches(x_train, y_train, batch_size, shuffle=True, seed=seed,
                          augment=EventAugment(size, train=True), device=device)
    test = TensorBatches(x_test, y_test, eval_batch_size or batch_size, shuffle=False, seed=seed,
                         augment=EventAugment(size, train=False), device=device)
    return DataBundle(name="cifar10-dvs", train=train, test=test, num_classes=num_classes,
                      input_shape=(int(x_train.shape[2]), size, size), time_steps=T)


def load_cifar10_dvs(
    root: str | os.PathLike,
    *,
    T: int = 10,
    batch_size: int = 32,
    seed: int = 60,
    device: torch.device | str = "cpu",
    workers: int = 4,
    cache_dir: Optional[str | os.PathLike] = None,
    size: int = 48,
    split_seed: int = SPLIT_SEED,
    progress: bool = True,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """CIFAR10-DVS from the original AEDAT 2.0 release under ``root``, as T-frame samples.

    The first call per T converts the events (``workers`` processes) into a cache under
    ``<root>/.esdsnn_cache`` (or ``cache_dir``); later calls reuse it. The stratified 90/10 split
    per class (``split_seed``) is saved with the cache.
    """
    root = Path(root).expanduser()
    files = list_files(root)
    cache_T = build_cache(root, T, workers=workers, cache_dir=cache_dir, progress=progress)
    train_rels, test_rels = load_split(_cache_root(root, cache_dir), files, split_seed)
    labels = dict(files)

    def part(rels: list[str]) -> tuple[Tensor, Tensor]:
        return load_frames(cache_T, rels, progress), torch.tensor([labels[r] for r in rels], dtype=torch.long)

    x_train, y_train = part(train_rels)
    x_test, y_test = part(test_rels)
    return dvs_bundle_from_frames(x_train, y_train, x_test, y_test, batch_size=batch_size,
                                  seed=seed, device=device, size=size,
                                  eval_batch_size=eval_batch_size)


def load(request: DataRequest) -> DataBundle:
    """The ``cifar10-dvs`` entry of the data-set registry: T frames per sample (default 10)."""
    if not request.data_path:
        raise ConfigError(
            f"cifar10-dvs needs --data-path DIR holding the 10 class folders of *.aedat files "
            f"(the original release from {DVS_URL})"
        )
    return load_cifar10_dvs(request.data_path, T=request.T or 10, batch_size=request.batch_size,
                            seed=request.seed, device=request.device,
                            workers=4 if request.workers is None else request.workers,
                            eval_batch_size=request.eval_batch_size)


__all__ = [
    "CLASSES", "DECODER_VERSION", "build_cache", "convert_file", "dvs_bundle_from_frames", "events_to_frames",
    "list_files", "load", "load_cifar10_dvs", "load_frames", "load_split", "read_aedat2",
    "stratified_split",
]
