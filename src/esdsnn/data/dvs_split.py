"""The train/test split of CIFAR10-DVS, which its release does not fix.

``official`` (the default): the split of the official ESD code, so its test set is the one the
paper's numbers were measured on. The code builds SpikingJelly's ``CIFAR10DVS(data_type="frame",
frames_number=10, split_by="number")`` and calls ``torch.utils.data.random_split(ds, [9000, 1000],
generator=torch.Generator().manual_seed(42))``. The data set's order is that of SpikingJelly's
frame folder read by torchvision's ``DatasetFolder``: SpikingJelly (0.0.0.0.14) converts
``<class>/<name>.aedat`` to ``<class>/<name>.npz`` (the aedat stem kept, no index appended), and
``DatasetFolder`` lists the class folders sorted by name, then each class's files sorted by name
(``sorted(os.walk(...))``, ``sorted(fnames)``). ``random_split`` draws
``torch.randperm(10000, generator)`` and gives the first 9000 positions of that order to training,
the last 1000 to test. Reproduced here without torchvision, from the same ``torch.randperm``. The
split is not class-balanced (85-115 test files per class). On a folder that is not the full release
of 10000 files the same rule holds out ``N // 10`` files, with a notice: not the paper's test set.

``stratified``: per class, a seeded 10 % (100 of 1000) for test; for uses that want balance.

Each kind is saved with the frame cache as ``split-<kind>.json`` and reused while it covers the
files present. ``split.json``, the stratified split of an esdsnn before split kinds, is never read
as the official one: it is kept as ``split-stratified.json``, with a notice.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch

from esdsnn.atomic import write_json_atomic
from esdsnn.errors import ConfigError, notice

SPLITS = ("official", "stratified")
DEFAULT_SPLIT = "official"
SEEDS = {"official": 42, "stratified": 60}
RELEASE_SIZE = 10_000
TEST_FRACTION = 0.1
OLD_SPLIT_FILE = "split.json"

Files = Sequence[tuple[str, int]]  # (relative path "class/name.aedat", label)


def frame_folder_order(files: Files) -> list[tuple[str, int]]:
    """``files`` in the order of SpikingJelly's frame folder as ``DatasetFolder`` lists it: class
    folder name, then the frame file's name (the aedat stem + ``.npz``), each sorted by code point."""

    def key(item: tuple[str, int]) -> tuple[str, str]:
        cls, name = item[0].split("/", 1)
        return cls, os.path.splitext(name)[0] + ".npz"

    return sorted(files, key=key)


def official_test_size(n: int) -> int:
    """Files held out for test by the official rule: 1000 of the release's 10000."""
    return n // 10


def official_split(files: Files, seed: int = SEEDS["official"]) -> tuple[list[str], list[str]]:
    """The official ESD code's split (module notes): positions ``randperm(N)[:N − n_test]`` of the
    frame-folder order train, the rest test, each in the permutation's order (as the two
    ``Subset``s of ``random_split`` hold them)."""
    ordered = frame_folder_order(files)
    n = len(ordered)
    n_train = n - official_test_size(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [ordered[i][0] for i in perm[:n_train]], [ordered[i][0] for i in perm[n_train:]]


def stratified_split(
    files: Files, seed: int = SEEDS["stratified"], test_fraction: float = TEST_FRACTION
) -> tuple[list[str], list[str]]:
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
        n_test = min(max(n_test, 1), len(names) - 1) if len(names) >= 2 else 0
        test += sorted(names[:n_test])
        train += sorted(names[n_test:])
    return train, test


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _retire_old_split(cache: Path) -> None:
    """Keep the ``split.json`` of an earlier esdsnn (always stratified) as ``split-stratified.json``
    so that it is never taken for the official split; one notice."""
    old = cache / OLD_SPLIT_FILE
    if not old.is_file():
        return
    saved = _read_json(old)
    new = cache / "split-stratified.json"
    if saved and not new.exists():
        write_json_atomic(new, {"kind": "stratified", **saved})
    old.unlink()
    notice(
        f"{old} holds the stratified split of an earlier esdsnn: kept as {new.name} (--dvs-split "
        "stratified); runs now use the paper's official split (--dvs-split official, the default)"
    )


def load_split(
    cache: Path, files: Files, kind: str = DEFAULT_SPLIT, seed: Optional[int] = None
) -> tuple[list[str], list[str]]:
    """The ``kind`` split of ``files``: the one saved in ``<cache>/split-<kind>.json`` if it was
    made with this seed and covers exactly the present files, else a new one (saved there)."""
    if kind not in SPLITS:
        raise ConfigError(f"unknown CIFAR10-DVS split {kind!r}; choose one of {', '.join(SPLITS)}")
    seed = SEEDS[kind] if seed is None else seed
    cache.mkdir(parents=True, exist_ok=True)
    _retire_old_split(cache)
    if kind == "official" and len(files) != RELEASE_SIZE:
        notice(
            f"CIFAR10-DVS holds {len(files)} files here, not the release's {RELEASE_SIZE}: the official "
            f"split's rule (seeded random_split, {official_test_size(len(files))} test files) is applied "
            "to them, so the test set is not the paper's"
        )
    path = cache / f"split-{kind}.json"
    saved = _read_json(path)
    present = {rel for rel, _ in files}
    if saved and saved.get("kind") == kind and saved.get("seed") == seed:
        train, test = list(saved.get("train", [])), list(saved.get("test", []))
        if set(train) | set(test) == present and not set(train) & set(test):
            return train, test
    train, test = official_split(files, seed) if kind == "official" else stratified_split(files, seed)
    write_json_atomic(path, {"kind": kind, "seed": seed, "train": train, "test": test})
    return train, test


__all__ = [
    "DEFAULT_SPLIT",
    "SEEDS",
    "SPLITS",
    "frame_folder_order",
    "load_split",
    "official_split",
    "official_test_size",
    "stratified_split",
]
