"""ImageNet folders: a tiny JPEG tree written with Pillow."""

import numpy as np
import pytest
import torch
from PIL import Image

from esdsnn.data.augment import IMAGENET_MEAN, IMAGENET_STD
from esdsnn.data.imagenet import (
    ImageFolderDataset,
    eval_transform,
    load_imagenet,
    random_resized_crop_box,
    scan_split,
)
from esdsnn.errors import ConfigError, DataError

torch.set_num_threads(1)

WNIDS = ["n01440764", "n01443537", "n01484850"]
COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]  # one per class, in sorted wnid order
SIZES = [(40, 30), (30, 44), (36, 36)]


def write_tree(root, per_class_train=4, per_class_val=2, order=(2, 0, 1)):
    """Class folders created out of order, so label order must come from sorting."""
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for k in order:
            folder = root / split / WNIDS[k]
            folder.mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", SIZES[i % 3], COLOURS[k])
                img.save(folder / f"{WNIDS[k]}_{i}.JPEG", quality=95)
    return root


def denorm(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x * std + mean


def test_bundle_shapes_and_label_order(tmp_path):
    write_tree(tmp_path)
    b = load_imagenet(tmp_path, batch_size=4, seed=0, device="cpu", workers=0, image_size=16)
    assert b.name == "imagenet" and b.num_classes == 3 and b.input_shape == (3, 16, 16)
    assert len(b.train) == 3 and len(b.test) == 2
    xs, ys = zip(*b.test)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert y.tolist() == [0, 0, 1, 1, 2, 2]  # sorted wnids, evaluation unshuffled
    colour = denorm(x).mean(dim=(2, 3)).argmax(1)  # the dominant channel names the class
    assert torch.equal(colour, y)
    xt, yt = next(iter(b.train))
    assert xt.shape == (4, 3, 16, 16)
    assert torch.equal(denorm(xt).mean(dim=(2, 3)).argmax(1), yt)


def test_eval_is_deterministic(tmp_path):
    write_tree(tmp_path)
    b = load_imagenet(tmp_path, batch_size=3, seed=0, device="cpu", workers=0, image_size=16)
    run1 = [x for x, _ in b.test]
    b.test.set_epoch(5)
    run2 = [x for x, _ in b.test]
    assert all(torch.equal(a, c) for a, c in zip(run1, run2))


def test_train_reproducible_per_seed_and_epoch_and_independent_of_workers(tmp_path):
    root = tmp_path / "data"
    write_tree(root, per_class_train=4)
    # textured images, so different crops give different pixels
    rng = np.random.default_rng(0)
    for path in sorted((root / "train").rglob("*.JPEG")):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)

    def epoch(workers, seed=0, e=0):
        b = load_imagenet(root, batch_size=4, seed=seed, device="cpu", workers=workers, image_size=16)
        b.train.set_epoch(e)
        return [(x, y) for x, y in b.train]

    a, a2, w1 = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, a2))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, w1))
    e1 = epoch(0, e=1)
    assert not torch.equal(torch.cat([x for x, _ in a]), torch.cat([x for x, _ in e1]))
    assert sorted(torch.cat([y for _, y in e1]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_random_resized_crop_box_stays_inside():
    rng = np.random.default_rng(0)
    for w, h in ((500, 375), (32, 200), (200, 32), (1, 1)):
        for _ in range(50):
            left, top, right, bottom = random_resized_crop_box(w, h, rng)
            assert 0 <= left < right <= w and 0 <= top < bottom <= h


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    img = Image.new("RGB", (80, 40))
    img.paste((255, 0, 0), (0, 0, 40, 40))
    out = eval_transform(img, 16, 18)
    assert out.size == (16, 16)
    # shorter side 40 -> 18, width 80 -> 36; the centre crop spans both halves
    arr = np.asarray(out)
    assert arr[8, 0, 0] > 200 and arr[8, 15, 0] < 50


def test_shards_cover_the_data_once_for_evaluation_and_evenly_for_training(tmp_path):
    write_tree(tmp_path)
    b = load_imagenet(tmp_path, batch_size=4, seed=7, device="cpu", workers=0, image_size=16)
    trains = [b.train.shard(r, 2) for r in range(2)]
    for t in trains:
        t.set_epoch(1)
    seen = [[int(v) for v in t._sampler()] for t in trains]
    assert len(seen[0]) == len(seen[1]) == 6 and sorted(seen[0] + seen[1]) == list(range(12))
    assert [sum(len(y) for _, y in t) for t in trains] == [6, 6] and len(trains[0]) == 3  # 2 a step
    tests = [b.test.shard(r, 2, train=False) for r in range(2)]
    assert sorted(int(v) for t in tests for _, y in t for v in y) == sorted(int(v) for _, y in b.test for v in y)
    trains[0].set_epoch(2)
    assert [int(v) for v in trains[0]._sampler()] != seen[0]  # another epoch, another order
    with pytest.raises(ConfigError, match="divide evenly"):
        b.train.shard(0, 3)


def test_grayscale_and_png_images_become_rgb(tmp_path):
    write_tree(tmp_path)
    Image.new("L", (20, 20), 128).save(tmp_path / "train" / WNIDS[0] / "gray.png")
    classes, samples = scan_split(tmp_path / "train")
    assert classes == WNIDS and len(samples) == 13
    ds = ImageFolderDataset(samples, train=False, image_size=8)
    x, label = ds[[s for s, _ in samples].index(str(tmp_path / "train" / WNIDS[0] / "gray.png"))]
    assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and label == 0


# ---- errors -------------------------------------------------------------------------------


def check_one_line_error(fn, *parts):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert str(part) in msg, msg
    return msg


def load(root, **kw):
    kw = {"batch_size": 2, "seed": 0, "device": "cpu", "workers": 0, "image_size": 16, **kw}
    return load_imagenet(root, **kw)


def test_missing_root_and_splits(tmp_path):
    check_one_line_error(lambda: load(tmp_path / "nope"), tmp_path / "nope", "train/<wnid>/*.JPEG")
    (tmp_path / "train").mkdir()
    check_one_line_error(lambda: load(tmp_path), tmp_path / "train", "no class folders")
    write_tree(tmp_path / "b")
    import shutil

    shutil.rmtree(tmp_path / "b" / "val")
    check_one_line_error(lambda: load(tmp_path / "b"), tmp_path / "b" / "val")


def test_flat_validation_folder_is_explained(tmp_path):
    write_tree(tmp_path, per_class_val=0)
    for wnid in WNIDS:
        (tmp_path / "val" / wnid).rmdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    check_one_line_error(lambda: load(tmp_path), "1 loose images", "one folder per wnid")


def test_unknown_validation_class(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "val" / "n99999999").mkdir()
    check_one_line_error(lambda: load(tmp_path), "n99999999")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_jpeg_names_the_file(tmp_path, workers):
    write_tree(tmp_path)
    bad = tmp_path / "val" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])
    b = load(tmp_path, workers=workers)
    check_one_line_error(lambda: list(b.test), bad)


def test_registry_entry_point(tmp_path):
    from esdsnn.data import DataRequest, imagenet

    write_tree(tmp_path)
    b = imagenet.load(DataRequest(data_path=str(tmp_path), batch_size=4, seed=0, T=4, workers=0, eval_batch_size=6))
    assert b.num_classes == 3 and len(b.test) == 1 and b.input_shape == (3, 224, 224)
    with pytest.raises(ConfigError, match="train/<wnid>"):
        imagenet.load(DataRequest(data_path=None, batch_size=4, seed=0))
