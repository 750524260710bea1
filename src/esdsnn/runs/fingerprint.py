"""What a run was trained on, recorded so that ``eval`` and ``report`` can say when it changed.

A file (an ``.npz``) is recorded by size, modification time and SHA-256 of its content; a folder
(CIFAR batches, CIFAR10-DVS class folders, ImageNet) by a manifest: the SHA-256 of the sorted
relative paths and sizes of its files down to ``MANIFEST_DEPTH`` levels (the file contents of a
large folder are not read). Comparing first looks at size and time, so an untouched file is not
hashed again; a file that was only touched (same content) does not count as changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional

MANIFEST_DEPTH = 2
MANIFEST_LIMIT = 200_000  # entries; beyond that the manifest says it is partial
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(root: Path) -> tuple[str, int, bool]:
    digest = hashlib.sha256()
    count, partial = 0, False
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= MANIFEST_DEPTH:
            dirs[:] = []
        for name in sorted(files):
            if count >= MANIFEST_LIMIT:
                return digest.hexdigest(), count, True
            path = Path(folder) / name
            try:
                size = path.stat().st_size
            except OSError:
                continue
            digest.update(f"{path.relative_to(root).as_posix()}\0{size}\n".encode())
            count += 1
    return digest.hexdigest(), count, partial


def data_fingerprint(data_path: Optional[str]) -> Optional[dict[str, Any]]:
    """The fingerprint of ``data_path`` (None for bundled data or a path that does not exist)."""
    if not data_path:
        return None
    path = Path(data_path)
    try:
        if path.is_file():
            stat = path.stat()
            return {
                "path": str(path),
                "kind": "file",
                "size": stat.st_size,
                "mtime": int(stat.st_mtime),
                "mtime_ns": stat.st_mtime_ns,
                "sha256": file_sha256(path),
            }
        if path.is_dir():
            digest, count, partial = _manifest(path)
            return {
                "path": str(path),
                "kind": "folder",
                "files": count,
                "manifest_sha256": digest,
                "manifest_depth": MANIFEST_DEPTH,
                "partial": partial,
            }
    except OSError:
        return None
    return None


def data_changed(recorded: Optional[dict[str, Any]], data_path: Optional[str]) -> Optional[str]:
    """A one-line description of how the data at ``data_path`` differs from ``recorded``, or
    None when it is the same (or nothing was recorded)."""
    if not recorded or not data_path:
        return None
    path = Path(data_path)
    if not path.exists():
        return f"the data {path} the run was trained on no longer exists"
    if recorded.get("kind") == "file" and path.is_file():
        stat = path.stat()
        # unchanged size and modification time to the nanosecond: no need to read the file (whole
        # seconds are not enough: a file rewritten within the second of the run keeps them)
        if stat.st_size == recorded.get("size") and stat.st_mtime_ns == recorded.get("mtime_ns"):
            return None
        if stat.st_size == recorded.get("size") and file_sha256(path) == recorded.get("sha256"):
            return None
        return (
            f"the data file {path} changed since training (size {recorded.get('size')} -> {stat.st_size} "
            f"bytes, content hash differs): figures are not those of the trained data"
        )
    now = data_fingerprint(data_path)
    if now is None or now.get("kind") != recorded.get("kind"):
        return f"the data {path} is no longer what the run was trained on (a {recorded.get('kind')} then)"
    if now.get("manifest_sha256") != recorded.get("manifest_sha256"):
        return (
            f"the data folder {path} changed since training ({recorded.get('files')} -> {now.get('files')} "
            f"files, or their sizes): figures are not those of the trained data"
        )
    return None


__all__ = ["data_changed", "data_fingerprint", "file_sha256"]
