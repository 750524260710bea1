"""CIFAR10-DVS: AEDAT 2.0 reading, frames, the frame cache and the bundle (the split:
test_dvs_split.py)."""

import importlib.util
import json
import os
from pathlib import Path

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
)

torch.set_num_threads(1)


def _helpers():
    spec = importlib.util.spec_from_file_location("dvs_files", Path(__file__).with_name("dvs_files.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_files = _helpers()
HEADER, dvs128_address, write_raw, write_aedat = (
    _files.HEADER,
    _files.dvs128_address,
    _files.write_raw,
    _files.write_aedat,
)
random_events, write_dataset, frames_by_loop = _files.random_events, _files.write_dataset, _files.frames_by_loop
spikingjelly_functions, spikingjelly_reader = _files.spikingjelly_functions, _files.spikingjelly_reader
check_one_line_error = _files.check_one_line_error


def test_hand_written_address_words_decode_to_the_documented_fields(tmp_path):
    # x_raw = 5, y_raw = 70, p_raw = 1  ->  a = (70 << 8) | (5 << 1) | 1 = 0x460B
    # image: x = 127 - y_raw = 57, y = 127 - x_raw = 122, p = 1 - p_raw = 0
    words = [(70 << 8) | (5 << 1) | 1, 0x460A, 0x0000, 0x7FFF]
    assert words[0] == 0x460B
    path = write_raw(tmp_path / "a.aedat", words, [100, 250, 7_000_000, 4_294_967_295])
    x, y, p, t, special = read_aedat2(path)
    assert special == 0
    assert (x[0], y[0], p[0]) == (57, 122, 0)
    assert (x[1], y[1], p[1]) == (57, 122, 1)  # the same pixel, the other polarity
    assert (x[2], y[2], p[2]) == (127, 127, 1)  # every raw field 0
    assert (x[3], y[3], p[3]) == (0, 0, 0)  # every raw field at its maximum
    assert t.tolist() == [100, 250, 7_000_000, 4_294_967_295]


def test_random_events_decode_exactly_and_cover_the_sensor(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    x_raw, y_raw, p_raw = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    t = np.sort(rng.integers(0, 2**31, n))
    path = write_raw(tmp_path / "r.aedat", dvs128_address(x_raw, y_raw, p_raw), t)
    x, y, p, tt, _ = read_aedat2(path)
    assert np.array_equal(x, 127 - y_raw) and np.array_equal(y, 127 - x_raw)
    assert np.array_equal(p, 1 - p_raw) and np.array_equal(tt, t)
    # spread over the sensor, not in one column (where the DAVIS240 masks put them)
    assert len(np.unique(x)) == 128 and len(np.unique(y)) == 128
    assert 0.4 < p.mean() < 0.6


def test_reader_agrees_with_spikingjellys_reader(tmp_path):
    load_origin_data = spikingjelly_reader()
    rng = np.random.default_rng(4)
    n = 3000
    words = dvs128_address(rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n))
    path = write_raw(tmp_path / "sj.aedat", words, np.sort(rng.integers(0, 2**31, n)))
    ref = load_origin_data(str(path))
    x, y, p, t, _ = read_aedat2(path)
    for ours, key in ((x, "x"), (y, "y"), (p, "p"), (t, "t")):
        assert np.array_equal(ours, np.asarray(ref[key]).astype(np.int64)), key
    assert len(np.unique(x)) == 128


def test_frames_agree_with_spikingjellys_reader_and_frame_integration(tmp_path):
    """The whole conversion, file to frames, against SpikingJelly's path: ``load_origin_data``
    then ``integrate_events_by_fixed_frames_number(split_by="number")`` (equal-count slices,
    channel = polarity, [T, 2, H, W])."""
    load_origin_data = spikingjelly_reader()
    integrate = spikingjelly_functions(
        "__init__.py",
        {
            "cal_fixed_frames_number_segment_index",
            "integrate_events_segment_to_frame",
            "integrate_events_by_fixed_frames_number",
        },
    )["integrate_events_by_fixed_frames_number"]
    rng = np.random.default_rng(6)
    for n, T in ((1003, 10), (64, 4), (7, 10)):
        words = dvs128_address(rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n))
        path = write_raw(tmp_path / f"f{n}.aedat", words, np.arange(n) * 3)
        ref = integrate(load_origin_data(str(path)), "number", T, 128, 128)
        assert np.array_equal(events_to_frames(*read_aedat2(path)[:3], T), ref), (n, T)


def test_special_events_are_skipped_and_counted_never_a_reason_to_refuse(tmp_path):
    """Bit 15 of a DVS128 address word marks a special event (jAER's ``DVS128.Extractor`` tests
    ``addr & 0x8000``, the DVS128 interface's ``SYNC_EVENT_BITMASK``, and makes such a word special,
    with no pixel). Hand-written words: two pixel events around two special ones."""
    words = [0x460B, 0x8000, 0x8000 | 0x460A, 0x0000]
    path = write_raw(tmp_path / "s.aedat", words, [10, 20, 30, 40])
    events = read_aedat2(path)
    assert events.special == 2
    assert events.x.tolist() == [57, 127] and events.y.tolist() == [122, 127] and events.p.tolist() == [0, 1]
    assert events.t.tolist() == [10, 40]  # the special events' timestamps go with them
    # the frames count pixel events only: N = 2, T = 2 puts one in each slice
    frames = events_to_frames(events.x, events.y, events.p, 2)
    assert frames.sum() == 2 and frames[0, 0, 122, 57] == 1 and frames[1, 1, 127, 127] == 1
    only_special = write_raw(tmp_path / "o.aedat", [0x8000, 0x8001])
    check_one_line_error(lambda: read_aedat2(only_special), only_special, "no pixel events", "2 special")


def test_a_release_with_special_events_loads_and_the_manifest_counts_them(tmp_path, capsys):
    events = write_dataset(tmp_path, per_class=1, n_events=8)
    rel = "ship/cifar10_ship_0.aedat"
    x, y, p = events[rel]
    words = list(dvs128_address(127 - y, 127 - x, 1 - p))
    words[3:3] = [0x8000, 0x8000 | 0x0101, 0x8000]  # three special events among the pixel events
    write_raw(tmp_path / rel, words)
    out = build_cache(tmp_path, 2, workers=0, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["special_events"] == 3 and manifest["special_events_per_file"] == {rel: 3}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 special events" in err[0] and "1 file" in err[0]
    with np.load(out / rel.replace(".aedat", ".npz")) as z:
        assert np.array_equal(z["frames"], frames_by_loop(x, y, p, 2)) and int(z["special"]) == 3
    (out / "manifest.json").unlink()  # counts come back from the samples when nothing is converted
    build_cache(tmp_path, 2, workers=0, progress=False)
    assert json.loads((out / "manifest.json").read_text())["special_events_per_file"] == {rel: 3}


def test_addresses_with_bits_above_15_are_refused_with_the_file_named(tmp_path):
    good = dvs128_address([3, 4], [5, 6], [0, 1])
    for extra in (1 << 16, 1 << 22, 0x80000000, 0x80008000):
        path = write_raw(tmp_path / f"davis_{extra:x}.aedat", [good[0], good[1] | extra])
        msg = check_one_line_error(lambda: read_aedat2(path), path, "bit 15", "1 of 2", "not a DVS128 recording")
        assert f"0x{int(good[1]) | extra:08X}" in msg


def test_frames_from_a_tiny_release_put_each_event_at_its_slice_polarity_and_pixel(tmp_path):
    """A 10-class folder of files with known raw words: each event must land in the cached frame
    at (slice, p, y, x) computed by hand from its raw fields."""
    rng = np.random.default_rng(5)
    expected = {}
    for cls in CLASSES:
        n = 12
        x_raw, y_raw, p_raw = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
        rel = f"{cls}/cifar10_{cls}_0.aedat"
        write_raw(tmp_path / rel, dvs128_address(x_raw, y_raw, p_raw))
        frames = np.zeros((3, 2, 128, 128), np.int64)
        for i in range(n):  # 12 events, T = 3: slices of 4
            frames[i // 4, 1 - p_raw[i], 127 - x_raw[i], 127 - y_raw[i]] += 1
        expected[rel] = frames
    out = build_cache(tmp_path, 3, workers=0, progress=False)
    for rel, frames in expected.items():
        with np.load(out / rel.replace(".aedat", ".npz")) as z:
            assert np.array_equal(z["frames"], frames), rel
            assert int(z["decoder"]) == dvs.DECODER_VERSION
    assert json.loads((out / "manifest.json").read_text())["decoder"] == dvs.DECODER_VERSION


def write_old_version_cache(root, T):
    """The cache as the first decoder version left it: a format-1 manifest and samples without
    a decoder field, frames of the misread events (all in column 127)."""
    out = root / ".esdsnn_cache" / f"T{T}"
    listing = []
    for rel, label in dvs.list_files(root):
        src = root / rel
        stale = np.zeros((T, 2, 128, 128), np.uint8)
        stale[:, 0, 120:, 127] = 1
        dst = out / rel.replace(".aedat", ".npz")
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(dst, frames=stale, src_size=np.int64(src.stat().st_size), T=np.int64(T))
        listing.append({"path": rel, "label": label, "size": src.stat().st_size})
    (out / "manifest.json").write_text(
        json.dumps({"format": 1, "T": T, "sensor": 128, "root": str(root), "files": listing})
    )
    return out


def test_a_cache_from_the_old_decoder_is_rebuilt_with_a_notice(tmp_path, monkeypatch, capsys):
    events = write_dataset(tmp_path, per_class=1)
    out = write_old_version_cache(tmp_path, 2)
    calls = counting(monkeypatch)
    assert build_cache(tmp_path, 2, workers=0, progress=False) == out
    assert len(calls) == 10  # every sample converted again, none reused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rebuilding" in err[0] and "version 1" in err[0] and str(out) in err[0]
    for rel, ev in events.items():
        with np.load(out / rel.replace(".aedat", ".npz")) as z:
            assert np.array_equal(z["frames"], frames_by_loop(*ev, 2)), rel
    # once rebuilt, it is reused silently
    build_cache(tmp_path, 2, workers=0, progress=False)
    assert len(calls) == 10 and capsys.readouterr().err == ""


def test_a_cache_from_decoder_version_2_is_rebuilt_with_a_notice(tmp_path, monkeypatch, capsys):
    """Version 2 refused files with special events and recorded no count of them."""
    write_dataset(tmp_path, per_class=1)
    out = build_cache(tmp_path, 2, workers=0, progress=False)
    capsys.readouterr()
    for npz in out.rglob("*.npz"):
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files if k != "special"}
        np.savez_compressed(npz, **{**arrays, "decoder": np.int64(2)})
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 1, "decoder": 2}))
    calls = counting(monkeypatch)
    build_cache(tmp_path, 2, workers=0, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 10 and len(err) == 1 and "rebuilding" in err[0] and "version 2" in err[0]


def test_old_samples_left_by_an_interrupted_old_conversion_are_not_reused(tmp_path, monkeypatch, capsys):
    write_dataset(tmp_path, per_class=1)
    out = write_old_version_cache(tmp_path, 2)
    (out / "manifest.json").unlink()  # the old conversion never finished
    calls = counting(monkeypatch)
    build_cache(tmp_path, 2, workers=0, progress=False)
    assert len(calls) == 10 and "rebuilding" in capsys.readouterr().err


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
    assert t1[0].shape == (4, 3, 2, 48, 48)  # the official rule holds out 30 // 10 files
    # a test sample's total count survives the resize (antialiased bilinear roughly keeps mass)
    split = json.loads((tmp_path / ".esdsnn_cache" / "split-official.json").read_text())
    n_events = len(events[split["test"][0]][0])
    assert abs(float(t1[0][:, 0].sum()) * (128 / 48) ** 2 - n_events) < 0.1 * n_events


# ---- errors -------------------------------------------------------------------------------


def test_missing_root_and_class_folders(tmp_path):
    check_one_line_error(
        lambda: load_cifar10_dvs(tmp_path / "none", T=2, batch_size=2, seed=0),
        tmp_path / "none",
        "airplane",
        "AEDAT 2.0",
    )
    write_dataset(tmp_path, per_class=1)
    for f in (tmp_path / "frog").iterdir():
        f.unlink()
    (tmp_path / "frog").rmdir()
    check_one_line_error(lambda: load_cifar10_dvs(tmp_path, T=2, batch_size=2, seed=0, workers=0), "frog")


def test_truncated_event_file_is_named_before_training(tmp_path):
    write_dataset(tmp_path, per_class=2)
    bad = tmp_path / "ship" / "cifar10_ship_1.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])
    check_one_line_error(
        lambda: load_cifar10_dvs(tmp_path, T=2, batch_size=2, seed=0, workers=0, progress=False),
        bad,
        "not whole uint32 words",
    )
    # the error also crosses the process pool intact
    check_one_line_error(
        lambda: build_cache(tmp_path, 2, workers=2, progress=False, cache_dir=tmp_path / "c"),
        bad,
        "not whole uint32 words",
    )
    bad.write_bytes(bad.read_bytes()[:-1])  # whole words now, but an odd number of them
    check_one_line_error(lambda: read_aedat2(bad), bad, "odd number of uint32 words")


def test_empty_and_foreign_event_files(tmp_path):
    empty = tmp_path / "e.aedat"
    empty.write_bytes(HEADER)
    check_one_line_error(lambda: read_aedat2(empty), empty, "no events")
    foreign = tmp_path / "f.aedat"
    foreign.write_bytes(HEADER + np.array([0xFFFFFFFF, 1], dtype=">u4").tobytes())
    check_one_line_error(lambda: read_aedat2(foreign), foreign, "not a DVS128 recording")


def test_registry_entry_point(tmp_path):
    from esdsnn.errors import ConfigError

    write_dataset(tmp_path, per_class=2)
    from esdsnn.data import DataRequest

    b = dvs.load(DataRequest(data_path=str(tmp_path), batch_size=4, seed=0, T=3, workers=0, eval_batch_size=10))
    assert b.time_steps == 3 and len(b.test) == 1
    with pytest.raises(ConfigError, match="aedat"):
        dvs.load(DataRequest(data_path=None, batch_size=4, seed=0, T=3))
