"""DVS128 recordings in jAER's AEDAT 2.0 format (the CIFAR10-DVS release): events, then frames.

An AEDAT 2.0 file is ``#`` header lines (the release starts with ``#!AER-DAT2.0``), then big-endian
uint32 pairs (address, timestamp µs). CIFAR10-DVS was recorded with a DVS128, whose address words
use bits 0-14 for a pixel event (polarity in bit 0, x in bits 1-7, y in bits 8-14) and set bit 15
for a special event: jAER's ``DVS128.Extractor`` marks a word with 0x8000 (the sync / external-input
bit of the DVS128's USB interface) special and gives it no pixel. Special events are skipped and
counted; a word with any of bits 16-31 set is no DVS128 address at all (a DAVIS recording, or a
corrupt file), and the file is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from esdsnn.errors import DataError, brief

SENSOR = 128
DVS128_ADDRESS_MASK = 0x7FFF  # x: bits 1-7, y: bits 8-14, polarity: bit 0
SPECIAL_EVENT_BIT = 0x8000  # bit 15: a special (sync / external input) event, no pixel


class Events(NamedTuple):
    """The pixel events of a recording in file order, in image coordinates, and how many special
    events (bit 15) were skipped."""

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    t: np.ndarray
    special: int


def read_aedat2(path: str | os.PathLike) -> Events:
    """Events of a CIFAR10-DVS AEDAT 2.0 file (see the module notes).

    Pixel events: ``x_raw = (a & 0xFE) >> 1``, ``y_raw = (a & 0x7F00) >> 8``, ``p_raw = a & 0x1``;
    image coordinates ``x = 127 − y_raw``, ``y = 127 − x_raw``, polarity ``p = 1 − p_raw``, as
    SpikingJelly's ``CIFAR10DVS.load_origin_data`` reads them. Words with bit 15 set are special
    events: skipped and counted in ``special`` (SpikingJelly 0.0.0.0.14 does not filter them: its
    masks drop bit 15, so it would count such a word as a pixel event from bits 0-14). Raises
    :class:`DataError` naming the file when it is truncated (not whole address/timestamp pairs),
    holds no pixel events, or has an address with any of bits 16-31 set.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {brief(exc, 160)}") from exc
    start = 0
    while start < len(raw) and raw[start : start + 1] == b"#":
        end = raw.find(b"\n", start)
        if end < 0:
            raise DataError(f"{path}: header line never ends (not an AEDAT 2.0 file, or truncated)")
        start = end + 1
    payload = len(raw) - start
    if payload % 8:
        what = "an odd number of uint32 words" if payload % 4 == 0 else f"{payload} bytes, not whole uint32 words"
        raise DataError(
            f"{path} is truncated or corrupt: its event payload holds {what} "
            "(AEDAT 2.0 events are (address, timestamp) pairs of 8 bytes)"
        )
    if payload == 0:
        raise DataError(f"{path} holds no events (truncated or not an AEDAT 2.0 file?)")
    words = np.frombuffer(raw, dtype=">u4", offset=start).reshape(-1, 2)
    addr, ts = words[:, 0], words[:, 1]
    foreign = addr & ~np.uint32(DVS128_ADDRESS_MASK | SPECIAL_EVENT_BIT)
    if foreign.any():
        bad = int(np.count_nonzero(foreign))
        first = int(addr[np.flatnonzero(foreign)[0]])
        raise DataError(
            f"{path}: {bad} of {len(addr)} event addresses have bits set above bit 15 (first "
            f"0x{first:08X}): not a DVS128 recording as CIFAR10-DVS holds, whose addresses use bits "
            "0-14 and bit 15 for special events (a DAVIS file, or corrupt)"
        )
    pixel = (addr & np.uint32(SPECIAL_EVENT_BIT)) == 0
    special = int(len(addr) - np.count_nonzero(pixel))
    if special == len(addr):
        raise DataError(f"{path} holds no pixel events, only {special} special events (bit 15)")
    if special:
        addr, ts = addr[pixel], ts[pixel]
    x_raw = (addr & 0xFE) >> 1
    y_raw = (addr & 0x7F00) >> 8
    p_raw = addr & 0x1
    x = (SENSOR - 1 - y_raw).astype(np.int64)
    y = (SENSOR - 1 - x_raw).astype(np.int64)
    p = 1 - p_raw.astype(np.int64)
    return Events(x, y, p, ts.astype(np.int64), special)


def events_to_frames(x: np.ndarray, y: np.ndarray, p: np.ndarray, T: int, size: int = SENSOR) -> np.ndarray:
    """Event counts ``[T, 2, size, size]`` (int64): slice j holds events
    ``[⌊N/T⌋·j, ⌊N/T⌋·(j+1))`` and the last slice runs up to N (SpikingJelly's
    ``split_by="number"``)."""
    n = len(x)
    q = n // T
    i = np.arange(n)
    t = np.minimum(i // q, T - 1) if q > 0 else np.full(n, T - 1)
    flat = ((t * 2 + p) * size + y) * size + x
    return np.bincount(flat, minlength=T * 2 * size * size).reshape(T, 2, size, size)


__all__ = ["DVS128_ADDRESS_MASK", "SENSOR", "SPECIAL_EVENT_BIT", "Events", "events_to_frames", "read_aedat2"]
