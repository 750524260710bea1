"""CIFAR10-DVS: AEDAT 2.0 reading, frames, the frame cache, the split and the bundle."""
import json
import os

import numpy as np
import pytest
import torch

from esdsnn.data import dvs
from esdsnn.data.dvs import (
    CLASSES,
    build_cache,
    events_to_frames,
    load_cifar10_dvs,
    read_aedat2,
    stratified_split,
)
from esdsnn.errors import DataError

torch.set_num_threads(1)

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Data format is int32 address, int32 timestamp (8 bytes total)\r\n#End Of ASCII Header\r\n"


def encode(x, y, p, t):
    """Addresses as the CIFAR10-DVS recordings hold them (inverse of the coordinate flips)."""
    x, y, p = (np.asarray(v, dtype=np.uint32) for v in (x, y, p))
    y_raw, x_raw, p_raw = 127 - x, 127 - y, 1 - p
    addr = (y_raw << 22) | (x_raw << 12) | (p_raw << 11) | np.uint32(0x1)  # plus an unrelated bit
    words = np.stack([addr, np.asarray(t, dtype=np.uint32)], axis=1).astype(">u4")
    return HEADER + words.tobytes()


def write_aedat(path, x, y, p, t=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(len(x)) * 10 if t is None else t
    path.write_bytes(encode(x, y, p, t))
    return path


def random_events(rng, n):
    return rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


def write_dataset(root, per_class=3, n_events=40, seed=0):
    rng = np.random.default_rng(seed)
    events = {}
    for cls in CLASSES:
        for i in range(per_class):
            rel = f"{cls}/cifar10_{cls}_{i}.aedat"
            events[rel] = random_events(rng, n_events + i)
            write_aedat(root / rel, *events[rel])
    return events


def frames_by_loop(x, y, p, T):
    """The frame definition, one event at a time."""
    n = len(x)
    q = n // T
    out = np.zeros((T, 2, 128, 128), np.int64)
    for i in range(n):
        j = min(i // q, T - 1) if q else T - 1
        out[j, p[i], y[i], x[i]] += 1
    return out


def test_reader_applies_bit_masks_and_coordinate_flips(tmp_path):
    path = write_aedat(tmp_path / "a.aedat", [3, 127, 0], [5, 0, 127], [1, 0, 1], [7, 8, 9])
    x, y, p, t = read_aedat2(path)
    assert x.tolist() == [3, 127, 0] and y.tolist() == [5, 0, 127]
    assert p.tolist() == [1, 0, 1] and t.tolist() == [7, 8, 9]
    # by hand: x = 3, y = 5, p = 1  <=>  y_raw = 124, x_raw = 122, p_raw = 0
    raw = np.frombuffer(path.read_bytes()[len(HEADER):], dtype=">u4")
    assert raw[0] == (124 << 22) | (122 << 12) | 1


def test_frames_hold_exactly_the_events_of_each_slice():
    # N = 7, T = 3: slices [0, 2), [2, 4), [4, 7)
    x = np.array([1, 2, 3, 4, 5, 6, 6])
    y = np.array([9, 9, 8, 8, 7, 7, 7])
    p = np.array([0, 1, 0, 1, 0, 1, 1])
    f = events_to_frames(x, y, p, 3)
    assert f.shape == (3, 2, 128, 128) and f.sum() == 7
    assert f[0, 0, 9, 1] == 1 and f[0, 1, 9, 2] == 1 and f[0].sum() == 2
    assert f[1, 0, 8, 3] == 1 and f[1, 1, 8, 4] == 1 and f[1].sum() == 2
    assert f[2, 0, 7, 5] == 1 and f[2, 1, 7, 6] == 2 and f[2].sum() == 3
    rng = np.random.default_rng(1)
    for n, T in ((101, 10), (5, 10), (40, 1)):
        ev = random_events(rng, n)
        assert np.array_equal(events_to_frames(*ev, T), frames_by_loop(*ev, T))


def test_cache_files_hold_the_written_events(tmp_path):
    events = write_dataset(tmp_path, per_class=2)
    out = build_cache(tmp_path, 4, workers=0, progress=False)
    assert out == tmp_path / ".esdsnn_cache" / "T4"
    for rel, ev in list(events.items())[:5]:
        with np.load(out / rel.replace(".aedat", ".npz")) as z:
            assert np.array_equal(z["frames"], frames_by_loop(*ev, 4))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["T"] == 4 and len(manifest["files"]) == 20
    assert manifest["files"][0]["size"] == (tmp_path / manifest["files"][0]["path"]).stat().st_size


REAL_CONVERT = dvs.convert_file


class Interrupted(Exception):
    """Stands in for Ctrl-C or a killed job in the middle of a conversion."""


def counting(monkeypatch, fail_after=None):
    calls = []
    real = REAL_CONVERT

    def fake(src, dst, T):
        if fail_after is not None and len(calls) >= fail_after:
            raise Interrupted
        calls.append(src)
        return real(src, dst, T)

    monkeypatch.setattr(dvs, "convert_file", fake)
    return calls


def test_cache_reused_then_rebuilt_when_T_changes(tmp_path, monkeypatch):
    write_dataset(tmp_path, per_class=2)
    calls = counting(monkeypatch)
    load_cifar10_dvs(tmp_path, T=3, batch_size=4, seed=0, workers=0, progress=False)
    assert len(calls) == 20
    npz = tmp_path / ".esdsnn_cache" / "T3" / "cat" / "cifar10_cat_0.npz"
    mtime = npz.stat().st_mtime_ns
    load_cifar10_dvs(tmp_path, T=3, batch_size=4, seed=0, workers=0, progress=False)
    assert len(calls) == 20 and npz.stat().st_mtime_ns == mtime
    b = load_cifar10_dvs(tmp_path, T=5, batch_size=4, seed=0, workers=0, progress=False)
    assert len(calls) == 40 and b.time_steps == 5
    assert (tmp_path / ".esdsnn_cache" / "T3" / "manifest.json").is_file()
    assert json.loads((tmp_path / ".esdsnn_cache" / "T5" / "manifest.json").read_text())["T"] == 5


def test_changed_source_file_is_reconverted(tmp_path, monkeypatch):
    write_dataset(tmp_path, per_class=2)
    build_cache(tmp_path, 2, workers=0, progress=False)
    write_aedat(tmp_path / "dog" / "cifar10_dog_1.aedat", [1] * 9, [2] * 9, [0] * 9)
    calls = counting(monkeypatch)
    out = build_cache(tmp_path, 2, workers=0, progress=False)
    assert [os.path.basename(c) for c in calls] == ["cifar10_dog_1.aedat"]
    with np.load(out / "dog" / "cifar10_dog_1.npz") as z:
        assert z["frames"][:, 0, 2, 1].tolist() == [4, 5]


def test_interrupted_conversion_resumes(tmp_path, monkeypatch):
    write_dataset(tmp_path, per_class=2)
    counting(monkeypatch, fail_after=7)
    with pytest.raises(Interrupted):
        build_cache(tmp_path, 4, workers=0, progress=False)
    out = tmp_path / ".esdsnn_cache" / "T4"
    assert not (out / "manifest.json").exists()
    assert len(list(out.rglob("*.npz"))) == 7 and not list(out.rglob("*.tmp"))
    calls = counting(monkeypatch)
    build_cache(tmp_path, 4, workers=0, progress=False)
    assert len(calls) == 13
    assert (out / "manifest.json").is_file()


def test_parallel_conversion_matches_serial(tmp_path):
    events = write_dataset(tmp_path, per_class=2)
    out = build_cache(tmp_path, 3, workers=2, progress=False, cache_dir=tmp_path / "par")
    for rel, ev in events.items():
        with np.load(out / rel.replace(".aedat", ".npz")) as z:
            assert np.array_equal(z["frames"], frames_by_loop(*ev, 3)), rel


def test_split_is_stratified_and_saved(tmp_path):
    write_dataset(tmp_path, per_class=3)
    b = load_cifar10_dvs(tmp_path, T=2, batch_size=8, seed=0, workers=0, progress=False)
    split = json.loads((tmp_path / ".esdsnn_cache" / "split.json").read_text())
    assert len(split["train"]) == 20 and len(split["test"]) == 10
    assert not set(split["train"]) & set(split["test"])
    assert sorted(r.split("/")[0] for r in split["test"]) == sorted(CLASSES)
    assert len(b.train.x) == 20 and len(b.test.x) == 10
    assert torch.bincount(b.test.y, minlength=10).tolist() == [1] * 10
    # the saved split is reused as is, even if the split function changes
    split["train"], split["test"] = split["train"][1:] + split["test"][:1], split["test"][1:] + split["train"][:1]
    (tmp_path / ".esdsnn_cache" / "split.json").write_text(json.dumps(split))
    b2 = load_cifar10_dvs(tmp_path, T=2, batch_size=8, seed=0, workers=0, progress=False)
    assert torch.bincount(b2.test.y, minlength=10).sum() == 10
    assert json.loads((tmp_path / ".esdsnn_cache" / "split.json").read_text())["test"] == split["test"]


def test_stratified_split_900_100_per_class():
    files = [(f"{c}/f{i}.aedat", k) for k, c in enumerate(CLASSES) for i in range(1000)]
    train, test = stratified_split(files, seed=60)
    assert len(train) == 9000 and len(test) == 1000
    per_class = {c: sum(r.startswith(c + "/") for r in test) for c in CLASSES}
    assert set(per_class.values()) == {100}
    assert stratified_split(files, seed=60) == (train, test)
    assert stratified_split(files, seed=61)[1] != test


def test_bundle_batches_are_time_major_and_reproducible(tmp_path):
    events = write_dataset(tmp_path, per_class=3)
    b = load_cifar10_dvs(tmp_path, T=4, batch_size=8, seed=0, workers=0, progress=False)
    assert b.name == "cifar10-dvs" and b.num_classes == 10
    assert b.time_steps == 4 and b.input_shape == (2, 48, 48)
    x, y = next(iter(b.train))
    assert x.shape == (4, 8, 2, 48, 48) and x.dtype == torch.float32 and y.shape == (8,)
    x2, y2 = next(iter(b.train))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    b.train.set_epoch(1)
    assert not torch.equal(next(iter(b.train))[0], x)
    t1 = [xb for xb, _ in b.test]
    t2 = [xb for xb, _ in b.test]
    assert all(torch.equal(a, c) for a, c in zip(t1, t2))
    assert t1[0].shape == (4, 8, 2, 48, 48)
    # a test sample's total count survives the resize (antialiased bilinear roughly keeps mass)
    split = json.loads((tmp_path / ".esdsnn_cache" / "split.json").read_text())
    n_events = len(events[split["test"][0]][0])
    assert abs(float(t1[0][:, 0].sum()) * (128 / 48) ** 2 - n_events) < 0.1 * n_events


# ---- errors -------------------------------------------------------------------------------


def check_one_line_error(fn, *parts):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for part in parts:
        assert str(part) in msg, msg
    return msg


def test_missing_root_and_class_folders(tmp_path):
    check_one_line_error(lambda: load_cifar10_dvs(tmp_path / "none", T=2, batch_size=2, seed=0),
                   tmp_path / "none", "airplane", "AEDAT 2.0")
    write_dataset(tmp_path, per_class=1)
    for f in (tmp_path / "frog").iterdir():
        f.unlink()
    (tmp_path / "frog").rmdir()
    check_one_line_error(lambda: load_cifar10_dvs(tmp_path, T=2, batch_size=2, seed=0, workers=0), "frog")


def test_truncated_event_file_is_named_before_training(tmp_path):
    write_dataset(tmp_path, per_class=2)
    bad = tmp_path / "ship" / "cifar10_ship_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])
    check_one_line_error(lambda: load_cifar10_dvs(tmp_path, T=2, batch_size=2, seed=0, workers=0, progress=False),
                   bad, "multiple of 8")
    # the error also crosses the process pool intact
    check_one_line_error(lambda: build_cache(tmp_path, 2, workers=2, progress=False, cache_dir=tmp_path / "c"),
                   bad, "multiple of 8")


def test_empty_and_foreign_event_files(tmp_path):
    empty = tmp_path / "e.aedat"
    empty.write_bytes(HEADER)
    check_one_line_error(lambda: read_aedat2(empty), empty, "no events")
    foreign = tmp_path / "f.aedat"
    foreign.write_bytes(HEADER + np.array([0xFFFFFFFF, 1], dtype=">u4").tobytes())
    check_one_line_error(lambda: read_aedat2(foreign), foreign, "128x128")


def test_registry_entry_point(tmp_path):
    from esdsnn.errors import ConfigError

    write_dataset(tmp_path, per_class=2)
    b = dvs.load(data_path=str(tmp_path), batch_size=4, seed=0, T=3, workers=0, eval_batch_size=10)
    assert b.time_steps == 3 and len(b.test) == 1
    with pytest.raises(ConfigError, match="aedat"):
        dvs.load(data_path=None, batch_size=4, seed=0, T=3)
