"""CIFAR10-DVS from the original release: AEDAT 2.0 event files → cached frame counts → batches.

``root`` holds the 10 class folders (airplane … truck) of ``*.aedat`` files, recorded with a
DVS128. Each file is read with a small vectorised NumPy reader of DVS128 addresses
(:func:`~esdsnn.data.aedat.read_aedat2`: special events skipped and counted), its N events are
split into T slices of equal count and counted per (polarity, y, x) into ``[T, 2, 128, 128]``
frames (:func:`~esdsnn.data.aedat.events_to_frames`). The conversion runs once per T, in parallel
over files, and is cached next to the data::

    <root>/.esdsnn_cache/split-<kind>.json      the train/test split (official or stratified)
    <root>/.esdsnn_cache/T{T}/manifest.json     T, decoder version, file list, source sizes, special events
    <root>/.esdsnn_cache/T{T}/<class>/<name>.npz  one compressed array per sample (+ decoder version)

Each ``.npz`` is written atomically, so an interrupted conversion resumes where it stopped; a
different T uses a different folder; samples made by another decoder version
(:data:`DECODER_VERSION`) are converted again, never reused. The split is the official ESD code's
by default (:mod:`esdsnn.data.dvs_split`). Batches are time-major ``[T, B, 2, 48, 48]`` floats:
resized on the device, with a random flip and one NDA op per training sample.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import IO, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from esdsnn.atomic import atomic_write, write_json_atomic
from esdsnn.data.aedat import SENSOR, Events, events_to_frames, read_aedat2
from esdsnn.data.augment import EventAugment
from esdsnn.data.base import DataBundle, DataRequest, TensorBatches
from esdsnn.data.dvs_split import DEFAULT_SPLIT, SPLITS, load_split, official_split, stratified_split
from esdsnn.errors import ConfigError, DataError, brief, notice
from esdsnn.recipes import recipe

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CACHE_DIRNAME = ".esdsnn_cache"
# 2: the manifest records the special events skipped per file.
CACHE_FORMAT = 2
# Version of the event decoder the cached frames were made with; a cache of another version is
# rebuilt, saying why (OLD_DECODERS).
DECODER_VERSION = 3
OLD_DECODERS = {
    1: "DAVIS240 address masks, which misplace every CIFAR10-DVS event",
    2: "no count of special events, whose files it refused",
}
DVS_URL = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"


# --------------------------------------------------------------------------------------------
# Frames, one file at a time
# --------------------------------------------------------------------------------------------


def _smallest_uint(frames: np.ndarray) -> np.ndarray:
    top = int(frames.max()) if frames.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return frames.astype(dtype)
    return frames


def convert_file(src: str, dst: str, T: int) -> tuple[int, int]:
    """Convert one AEDAT file into a compressed ``.npz`` of frames (the smallest unsigned dtype
    that holds the counts), written atomically. Returns the numbers of pixel and special events."""
    events: Events = read_aedat2(src)
    frames = _smallest_uint(events_to_frames(events.x, events.y, events.p, T))
    dst_path = Path(dst)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst_path, "wb") as fh:
        _write_npz(
            fh,
            frames=frames,
            src_size=np.int64(os.path.getsize(src)),
            T=np.int64(T),
            decoder=np.int64(DECODER_VERSION),
            special=np.int64(events.special),
        )
    return len(events.x), events.special


def _write_npz(fh: IO[bytes], **arrays: np.ndarray | np.generic) -> None:
    """Like ``np.savez_compressed`` (``np.load`` reads it), at deflate level 1: frames of event
    counts are mostly zeros, and level 1 is ~3× faster than the default at a similar size."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _convert_job(args: tuple[str, str, int]) -> tuple[str, int]:
    """``(src, special events)`` of one conversion."""
    src, dst, T = args
    return src, convert_file(src, dst, T)[1]


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
        names = sorted(f.name for f in (root / cls).iterdir() if f.is_file() and f.suffix.lower() == ".aedat")
        if not names:
            raise DataError(f"CIFAR10-DVS class folder {root / cls} holds no *.aedat files")
        files += [(f"{cls}/{n}", label) for n in names]
    return files


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cached_sample(npz: Path, src_size: int, T: int) -> Optional[tuple[int, int]]:
    """``(decoder version, special events)`` of a cached sample made from this source (size) with
    this T (version ``1`` for samples written before versions were recorded), ``None`` when
    missing or unusable."""
    try:
        with np.load(npz) as z:
            if int(z["src_size"]) != src_size or int(z["T"]) != T:
                return None
            decoder = int(z["decoder"]) if "decoder" in z.files else 1
            return decoder, int(z["special"]) if "special" in z.files else 0
    except Exception:
        return None


def build_cache(
    root: str | os.PathLike,
    T: int,
    *,
    workers: int = 4,
    cache_dir: Optional[str | os.PathLike] = None,
    progress: bool = True,
) -> Path:
    """Convert every AEDAT file under ``root`` to frames with T slices, once; returns the
    folder ``<cache>/T{T}``. Files already converted by this decoder version (same source size)
    are skipped, so an interrupted run resumes; samples made by another decoder version are
    converted again, with a notice. ``workers`` processes convert in parallel (0: here). The
    manifest counts the special events skipped: ``special_events`` (total) and, per file that
    had any, ``special_events_per_file``."""
    if T < 1:
        raise DataError(f"T must be at least 1, got {T}")
    root = Path(root).expanduser()
    files = list_files(root)
    cache = _cache_root(root, cache_dir)
    out = cache / f"T{T}"
    sizes = {rel: (root / rel).stat().st_size for rel, _ in files}
    listing = [{"path": rel, "label": lab, "size": sizes[rel]} for rel, lab in files]
    manifest = _read_json(out / "manifest.json")
    if (
        manifest
        and manifest.get("format") == CACHE_FORMAT
        and manifest.get("T") == T
        and manifest.get("decoder") == DECODER_VERSION
        and manifest.get("files") == listing
        and all((out / _npz_name(rel)).is_file() for rel, _ in files)
    ):
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the frame cache {out}: {brief(exc, 160)} (pass cache_dir= a writable folder)"
        ) from exc
    cached = {rel: _cached_sample(out / _npz_name(rel), sizes[rel], T) for rel, _ in files}
    outdated = {c[0] for c in cached.values() if c is not None and c[0] != DECODER_VERSION}
    if manifest and manifest.get("decoder", 1) != DECODER_VERSION:
        outdated.add(manifest.get("decoder", 1))
    if outdated:
        why = "; ".join(f"{v}: {OLD_DECODERS.get(v, 'unknown')}" for v in sorted(outdated))
        notice(
            f"the CIFAR10-DVS frame cache in {out} was made by event decoder version "
            f"{', '.join(map(str, sorted(outdated)))} ({why}); rebuilding it with version {DECODER_VERSION} "
            "(DVS128 addresses, special events skipped and counted)"
        )
    special = {rel: c[1] for rel, c in cached.items() if c is not None and c[0] == DECODER_VERSION}
    todo = [(str(root / rel), str(out / _npz_name(rel)), T) for rel, _ in files if rel not in special]
    if todo:
        rel_of = {job[0]: os.path.relpath(job[0], root).replace(os.sep, "/") for job in todo}
        bar = tqdm(total=len(todo), desc=f"CIFAR10-DVS -> frames (T={T})", unit="file", disable=not progress)
        try:
            for src, n_special in _run_jobs(todo, workers):
                special[rel_of[src]] = n_special
                bar.update(1)
        finally:
            bar.close()
    per_file = {rel: n for rel, n in sorted(special.items()) if n}
    converted = [n for job in todo if (n := special[rel_of[job[0]]])] if todo else []
    if converted:
        notice(
            f"CIFAR10-DVS: {sum(converted)} special events (bit 15: sync/external input, no pixel) "
            f"skipped in {len(converted)} file(s); counted in {out / 'manifest.json'}"
        )
    write_json_atomic(
        out / "manifest.json",
        {
            "format": CACHE_FORMAT,
            "decoder": DECODER_VERSION,
            "T": T,
            "sensor": SENSOR,
            "root": str(root),
            "files": listing,
            "special_events": sum(per_file.values()),
            "special_events_per_file": per_file,
        },
    )
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
            raise DataError(f"frame cache file {path} is unreadable ({brief(exc, 160)}); delete it and rerun") from exc
        if out is None:
            out = np.zeros((len(rels), *frames.shape), np.uint8)
        elif frames.shape != out.shape[1:]:
            raise DataError(
                f"frame cache file {path} has shape {frames.shape}, expected "
                f"{out.shape[1:]}; delete {cache_T} and rerun"
            )
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
    train = TensorBatches(
        x_train, y_train, batch_size, shuffle=True, seed=seed, augment=EventAugment(size, train=True), device=device
    )
    test = TensorBatches(
        x_test,
        y_test,
        eval_batch_size or batch_size,
        shuffle=False,
        seed=seed,
        augment=EventAugment(size, train=False),
        device=device,
    )
    return DataBundle(
        name="cifar10-dvs",
        train=train,
        test=test,
        num_classes=num_classes,
        input_shape=(int(x_train.shape[2]), size, size),
        time_steps=T,
    )


DVS_RECIPE = recipe("cifar10-dvs")


def load_cifar10_dvs(
    root: str | os.PathLike,
    *,
    T: int = DVS_RECIPE["T"],
    batch_size: int = DVS_RECIPE["batch_size"],
    seed: int = 60,
    device: torch.device | str = "cpu",
    workers: int = 4,
    cache_dir: Optional[str | os.PathLike] = None,
    size: int = 48,
    split: str = DEFAULT_SPLIT,
    split_seed: Optional[int] = None,
    progress: bool = True,
    eval_batch_size: Optional[int] = None,
) -> DataBundle:
    """CIFAR10-DVS from the original AEDAT 2.0 release under ``root``, as T-frame samples.

    The first call per T converts the events (``workers`` processes) into a cache under
    ``<root>/.esdsnn_cache`` (or ``cache_dir``); later calls reuse it. ``split``: ``official``
    (the official ESD code's seeded ``random_split``, the paper's test set) or ``stratified``
    (:mod:`esdsnn.data.dvs_split`); ``split_seed`` replaces the kind's seed (42, 60). The split
    is saved with the cache.
    """
    root = Path(root).expanduser()
    files = list_files(root)
    cache_T = build_cache(root, T, workers=workers, cache_dir=cache_dir, progress=progress)
    train_rels, test_rels = load_split(_cache_root(root, cache_dir), files, split, split_seed)
    labels = dict(files)

    def part(rels: list[str]) -> tuple[Tensor, Tensor]:
        return load_frames(cache_T, rels, progress), torch.tensor([labels[r] for r in rels], dtype=torch.long)

    x_train, y_train = part(train_rels)
    x_test, y_test = part(test_rels)
    return dvs_bundle_from_frames(
        x_train,
        y_train,
        x_test,
        y_test,
        batch_size=batch_size,
        seed=seed,
        device=device,
        size=size,
        eval_batch_size=eval_batch_size,
    )


def load(request: DataRequest) -> DataBundle:
    """The ``cifar10-dvs`` entry of the data-set registry: T frames per sample (default: the
    recipe's), split as ``request.options.dvs_split`` says."""
    if not request.data_path:
        raise ConfigError(
            f"cifar10-dvs needs --data-path DIR holding the 10 class folders of *.aedat files "
            f"(the original release from {DVS_URL})"
        )
    return load_cifar10_dvs(
        request.data_path,
        T=request.T or DVS_RECIPE["T"],
        batch_size=request.batch_size,
        seed=request.seed,
        device=request.device,
        workers=4 if request.workers is None else request.workers,
        split=request.options.dvs_split,
        eval_batch_size=request.eval_batch_size,
    )


__all__ = [
    "CLASSES",
    "DECODER_VERSION",
    "SPLITS",
    "build_cache",
    "convert_file",
    "dvs_bundle_from_frames",
    "events_to_frames",
    "list_files",
    "load",
    "load_cifar10_dvs",
    "load_frames",
    "load_split",
    "official_split",
    "read_aedat2",
    "stratified_split",
]
