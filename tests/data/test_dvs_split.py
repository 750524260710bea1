"""The CIFAR10-DVS split: the official ESD code's seeded ``random_split`` over SpikingJelly's frame
folder order (the paper's test set), the stratified option, and how each is saved with the cache."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from esdsnn.data import dvs_split
from esdsnn.data.dvs import CLASSES, list_files, load_cifar10_dvs
from esdsnn.data.dvs_split import frame_folder_order, official_split, stratified_split

torch.set_num_threads(1)


def _helpers():
    spec = importlib.util.spec_from_file_location("dvs_files", Path(__file__).with_name("dvs_files.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_dataset = _helpers().write_dataset


def spikingjelly_frame_name(aedat_name):
    """The name SpikingJelly 0.0.0.0.14 gives the frames of ``<name>.aedat``:
    ``CIFAR10DVS.create_events_np_files`` writes ``os.path.splitext(bin_file)[0] + '.npz'`` and
    ``integrate_events_file_to_frames_file_by_fixed_frames_number`` keeps
    ``os.path.basename(events_np_file)`` (checked against its source below)."""
    return os.path.splitext(aedat_name)[0] + ".npz"


def test_spikingjelly_keeps_the_aedat_stem_in_its_frame_file_names():
    spec = importlib.util.find_spec("spikingjelly")
    if spec is None:
        pytest.skip("spikingjelly is not installed")
    datasets = Path(spec.origin).parent / "datasets"
    assert "os.path.splitext(bin_file)[0] + '.npz'" in (datasets / "cifar10_dvs.py").read_text()
    init = (datasets / "__init__.py").read_text()
    fn = init[init.index("def integrate_events_file_to_frames_file_by_fixed_frames_number") :]
    fn = fn[: fn.index("\ndef ")]
    assert "fname = os.path.join(output_dir, os.path.basename(events_np_file))" in fn
    assert "frames_number_{frames_number}_split_by_{split_by}" in init


def dataset_folder_listing(root):
    """torchvision's ``DatasetFolder`` listing (``find_classes`` + ``make_dataset``), written out:
    class folders sorted by name, then per class ``sorted(os.walk(...))`` and ``sorted(fnames)``,
    files with the ``.npz`` extension; ``(path relative to root, class index)``."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    out = []
    for index, cls in enumerate(classes):
        for folder, _, fnames in sorted(os.walk(os.path.join(root, cls), followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(".npz"):
                    out.append((os.path.relpath(os.path.join(folder, fname), root).replace(os.sep, "/"), index))
    return out


def frame_folder_of(root, frames):
    """SpikingJelly's frame folder for the release under ``root``: one empty ``.npz`` per file."""
    for rel, _ in list_files(root):
        cls, name = rel.split("/")
        (frames / cls).mkdir(parents=True, exist_ok=True)
        (frames / cls / spikingjelly_frame_name(name)).touch()
    return dataset_folder_listing(frames)


def test_the_official_split_is_torchs_random_split_over_the_frame_folder(tmp_path):
    """On a folder in the release's layout (12 files a class, so that ``_10`` sorts before ``_2``),
    against ``torch.utils.data.random_split`` itself over the frame folder's listing."""
    root = tmp_path / "release"
    write_dataset(root, per_class=12, n_events=20)
    listing = frame_folder_of(root, tmp_path / "frames_number_10_split_by_number")
    assert listing[:3] == [
        ("airplane/cifar10_airplane_0.npz", 0),
        ("airplane/cifar10_airplane_1.npz", 0),
        ("airplane/cifar10_airplane_10.npz", 0),
    ]
    files = list_files(root)
    assert [(spikingjelly_frame_name(rel), label) for rel, label in frame_folder_order(files)] == listing
    train_ref, test_ref = torch.utils.data.random_split(listing, [108, 12], generator=torch.Generator().manual_seed(42))
    train, test = official_split(files)
    assert [spikingjelly_frame_name(r) for r in train] == [rel for rel, _ in train_ref]
    assert [spikingjelly_frame_name(r) for r in test] == [rel for rel, _ in test_ref]
    bundle = load_cifar10_dvs(root, T=2, batch_size=8, seed=0, workers=0, progress=False)
    assert bundle.test.y.tolist() == [label for _, label in test_ref]  # the test set, in its order
    saved = json.loads((root / ".esdsnn_cache" / "split-official.json").read_text())
    assert saved["kind"] == "official" and saved["seed"] == 42 and saved["test"] == test


def test_the_official_split_of_the_full_release_by_index():
    """10000 files as the release names them (``cifar10_<class>_<i>.aedat``, i < 1000): 9000/1000,
    ``random_split(range(10000), [9000, 1000], manual_seed(42))`` over the frame-folder order."""
    names = {cls: sorted(f"cifar10_{cls}_{i}.npz" for i in range(1000)) for cls in CLASSES}
    order = [f"{cls}/{name}" for cls in sorted(CLASSES) for name in names[cls]]
    files = [(f"{cls}/cifar10_{cls}_{i}.aedat", k) for k, cls in enumerate(CLASSES) for i in range(1000)]
    train_idx, test_idx = torch.utils.data.random_split(
        range(10000), [9000, 1000], generator=torch.Generator().manual_seed(42)
    )
    train, test = official_split(files)
    assert (len(train), len(test)) == (9000, 1000)
    assert [spikingjelly_frame_name(r) for r in train] == [order[i] for i in train_idx]
    assert [spikingjelly_frame_name(r) for r in test] == [order[i] for i in test_idx]
    per_class = [sum(r.startswith(cls + "/") for r in test) for cls in CLASSES]
    assert (min(per_class), max(per_class)) == (85, 115)  # not class-balanced
    # the stratified test set shares 101 of its 1000 files with this one (as the issue measured)
    assert len(set(stratified_split(files)[1]) & set(test)) == 101


def test_stratified_split_900_100_per_class():
    files = [(f"{c}/f{i}.aedat", k) for k, c in enumerate(CLASSES) for i in range(1000)]
    train, test = stratified_split(files, seed=60)
    assert len(train) == 9000 and len(test) == 1000
    per_class = {c: sum(r.startswith(c + "/") for r in test) for c in CLASSES}
    assert set(per_class.values()) == {100}
    assert stratified_split(files, seed=60) == (train, test)
    assert stratified_split(files, seed=61)[1] != test


def test_each_kind_is_saved_apart_reused_as_saved_and_never_taken_for_the_other(tmp_path, capsys):
    write_dataset(tmp_path, per_class=3)
    cache = tmp_path / ".esdsnn_cache"
    official = load_cifar10_dvs(tmp_path, T=2, batch_size=8, seed=0, workers=0, progress=False)
    assert "not the paper's" in capsys.readouterr().err  # 30 files, not 10000
    strat = load_cifar10_dvs(tmp_path, T=2, batch_size=8, seed=0, workers=0, progress=False, split="stratified")
    assert torch.bincount(strat.test.y, minlength=10).tolist() == [1] * 10
    assert len(official.test.x) == 3 and len(strat.test.x) == 10
    saved = json.loads((cache / "split-stratified.json").read_text())
    assert saved["kind"] == "stratified" and saved["seed"] == 60
    assert json.loads((cache / "split-official.json").read_text())["kind"] == "official"
    # a saved split is reused as is, even if the split function changes
    saved["train"], saved["test"] = saved["train"][1:] + saved["test"][:1], saved["test"][1:] + saved["train"][:1]
    (cache / "split-stratified.json").write_text(json.dumps(saved))
    again = load_cifar10_dvs(tmp_path, T=2, batch_size=8, seed=0, workers=0, progress=False, split="stratified")
    assert len(again.test.x) == 10 and json.loads((cache / "split-stratified.json").read_text()) == saved
    # ...but never under the other kind's name
    (cache / "split-official.json").write_text(json.dumps({**saved, "kind": "stratified"}))
    assert dvs_split.load_split(cache, list_files(tmp_path)) == official_split(list_files(tmp_path))


def test_an_old_split_json_is_kept_as_the_stratified_split_never_used_as_the_official(tmp_path, capsys):
    """esdsnn before split kinds saved its (stratified) split as ``split.json``."""
    write_dataset(tmp_path, per_class=3)
    files = list_files(tmp_path)
    cache = tmp_path / ".esdsnn_cache"
    cache.mkdir()
    train, test = stratified_split(files, seed=60)
    old = {"seed": 60, "test_fraction": 0.1, "classes": list(CLASSES), "train": train, "test": test}
    (cache / "split.json").write_text(json.dumps(old))
    assert dvs_split.load_split(cache, files) == official_split(files)
    err = [line for line in capsys.readouterr().err.splitlines() if "split.json" in line]
    assert len(err) == 1 and "split-stratified.json" in err[0] and "official" in err[0]
    assert not (cache / "split.json").exists()
    assert json.loads((cache / "split-stratified.json").read_text()) == {"kind": "stratified", **old}
    assert dvs_split.load_split(cache, files, "stratified") == (train, test)
    dvs_split.load_split(cache, files)
    assert "split.json" not in capsys.readouterr().err  # said once


def test_an_unknown_split_kind_is_one_line(tmp_path):
    from esdsnn.errors import ConfigError

    with pytest.raises(ConfigError, match="official, stratified"):
        dvs_split.load_split(tmp_path, [("cat/a.aedat", 3)], "random")
