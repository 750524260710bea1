"""CIFAR-10/100 from small files in the official python-version formats."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from esdsnn.data.augment import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, AugmentConfig
from esdsnn.data.cifar import load_cifar, read_cifar
from esdsnn.errors import DataError

torch.set_num_threads(1)

C10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def batch_dict(n, num_classes, rng, label_key=b"labels"):
    d = {
        b"batch_label": b"training batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if label_key == b"fine_labels":
        d[b"coarse_labels"] = [v // 5 for v in d[label_key]]
    return d


def write_cifar10(root, per_batch=6, n_test=5, seed=0):
    """``root/cifar-10-batches-py/`` as in the official archive; returns the written dicts."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    dicts = {}
    for name in [*C10_TRAIN, "test_batch"]:
        dicts[name] = batch_dict(n_test if name == "test_batch" else per_batch, 10, rng)
        (folder / name).write_bytes(pickle.dumps(dicts[name], protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return folder, dicts


def write_cifar100(root, n_train=12, n_test=4, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    dicts = {}
    for name, n in (("train", n_train), ("test", n_test)):
        dicts[name] = batch_dict(n, 100, rng, b"fine_labels")
        (folder / name).write_bytes(pickle.dumps(dicts[name], protocol=2))
    return folder, dicts


def make_targz(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def expected(dicts, names, key=b"labels"):
    x = np.concatenate([dicts[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([dicts[n][key] for n in names])
    return torch.from_numpy(x), torch.from_numpy(y).long()


def test_cifar10_folder_shapes_dtypes_and_label_order(tmp_path):
    _, dicts = write_cifar10(tmp_path)
    x_tr, y_tr, x_te, y_te = read_cifar("cifar10", tmp_path)
    assert x_tr.shape == (30, 3, 32, 32) and x_tr.dtype == torch.uint8
    assert x_te.shape == (5, 3, 32, 32) and y_tr.dtype == torch.int64
    ex, ey = expected(dicts, C10_TRAIN)
    assert torch.equal(x_tr, ex) and torch.equal(y_tr, ey)
    ex, ey = expected(dicts, ["test_batch"])
    assert torch.equal(x_te, ex) and torch.equal(y_te, ey)
    # channel-major planes: the first 1024 bytes are the red channel
    assert torch.equal(x_tr[0, 0].flatten(), torch.from_numpy(dicts["data_batch_1"][b"data"][0, :1024]))


def test_cifar10_archive_equals_folder_and_all_root_forms(tmp_path):
    folder, _ = write_cifar10(tmp_path / "src")
    (tmp_path / "dl").mkdir()
    archive = make_targz(folder, tmp_path / "dl" / "cifar-10-python.tar.gz")
    ref = read_cifar("cifar10", tmp_path / "src")
    for root in (tmp_path / "dl", archive, folder):
        got = read_cifar("cifar10", root)
        assert all(torch.equal(a, b) for a, b in zip(ref, got))


def test_cifar100_folder_and_archive(tmp_path):
    folder, dicts = write_cifar100(tmp_path / "a")
    (tmp_path / "b").mkdir()
    make_targz(folder, tmp_path / "b" / "cifar-100-python.tar.gz")
    for root in (tmp_path / "a", tmp_path / "b"):
        x_tr, y_tr, x_te, y_te = read_cifar("cifar100", root)
        ex, ey = expected(dicts, ["train"], b"fine_labels")
        assert x_tr.shape == (12, 3, 32, 32) and torch.equal(x_tr, ex) and torch.equal(y_tr, ey)
        ex, ey = expected(dicts, ["test"], b"fine_labels")
        assert torch.equal(x_te, ex) and torch.equal(y_te, ey)


def test_load_cifar_bundle_batches(tmp_path):
    write_cifar10(tmp_path)
    b = load_cifar("cifar10", tmp_path, batch_size=8, seed=0, device="cpu", augment=AugmentConfig())
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32) and b.time_steps is None
    assert len(b.train) == 4 and len(b.test) == 1
    batches = list(b.train)
    assert [x.shape[0] for x, _ in batches] == [8, 8, 8, 6]
    x, y = batches[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    c100 = tmp_path / "c100"
    write_cifar100(c100)
    b100 = load_cifar("cifar100", c100, batch_size=4, seed=0, device="cpu", augment=AugmentConfig())
    assert b100.num_classes == 100
    x, _ = next(iter(b100.test))
    lo = min((0 - m) / s for m, s in zip(CIFAR100_MEAN, CIFAR100_STD))
    assert x.min() >= lo - 1e-5


def test_train_batches_reproducible_per_seed_and_epoch(tmp_path):
    write_cifar10(tmp_path)

    def first(seed, epoch):
        b = load_cifar("cifar10", tmp_path, batch_size=8, seed=seed, device="cpu")
        b.train.set_epoch(epoch)
        return next(iter(b.train))

    x1, y1 = first(3, 0)
    x2, y2 = first(3, 0)
    x3, _ = first(3, 1)
    x4, _ = first(4, 0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)


def test_eval_is_deterministic_normalisation_only(tmp_path):
    _, dicts = write_cifar10(tmp_path)
    b = load_cifar("cifar10", tmp_path, batch_size=4, seed=0, device="cpu")
    run1 = list(b.test)
    b.test.set_epoch(7)
    run2 = list(b.test)
    assert all(torch.equal(a[0], c[0]) for a, c in zip(run1, run2))
    ex, ey = expected(dicts, ["test_batch"])
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    x = torch.cat([a[0] for a in run1])
    assert torch.allclose(x, (ex.float() / 255 - mean) / std, atol=1e-6)
    assert torch.equal(torch.cat([a[1] for a in run1]), ey)


def test_augmentation_switches(tmp_path):
    write_cifar10(tmp_path)
    off = AugmentConfig(crop=False, flip=False, autoaugment=False, cutout=False)
    b = load_cifar("cifar10", tmp_path, batch_size=30, seed=0, device="cpu", augment=off)
    x, y = next(iter(b.train))
    x_tr, y_tr, _, _ = read_cifar("cifar10", tmp_path)
    order = torch.randperm(30, generator=b.train.generator())
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(x, (x_tr[order].float() / 255 - mean) / std, atol=1e-6)
    assert torch.equal(y, y_tr[order])


# ---- errors -------------------------------------------------------------------------------


def check_one_line_error(fn, *parts):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for p in parts:
        assert str(p) in msg, msg
    return msg


def test_missing_root_says_what_is_expected(tmp_path):
    check_one_line_error(
        lambda: read_cifar("cifar10", tmp_path),
        tmp_path,
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py/",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
    )
    check_one_line_error(lambda: read_cifar("cifar100", tmp_path / "nope"), "cifar-100-python.tar.gz")
    write_cifar10(tmp_path / "ten")
    check_one_line_error(lambda: read_cifar("cifar100", tmp_path / "ten"), "CIFAR-100 not found")


def test_incomplete_folder_names_missing_batch(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    os.remove(folder / "data_batch_3")
    check_one_line_error(lambda: read_cifar("cifar10", tmp_path), "data_batch_3", folder)


def test_truncated_pickle_names_file(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    data = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(data[: len(data) // 2])
    check_one_line_error(lambda: load_cifar("cifar10", tmp_path, batch_size=4, seed=0), folder / "data_batch_2")


def test_truncated_and_corrupt_archive_names_archive(tmp_path):
    folder, _ = write_cifar10(tmp_path / "src")
    good = make_targz(folder, tmp_path / "good.tar.gz").read_bytes()
    for name, payload in (("trunc", good[: len(good) // 2]), ("garbage", b"\x1f\x8b" + os.urandom(500))):
        d = tmp_path / name
        d.mkdir()
        (d / "cifar-10-python.tar.gz").write_bytes(payload)
        check_one_line_error(lambda: read_cifar("cifar10", d), d / "cifar-10-python.tar.gz")


def test_wrong_content_is_rejected(tmp_path):
    folder, dicts = write_cifar10(tmp_path)
    bad = dict(dicts["test_batch"])
    bad[b"data"] = bad[b"data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    check_one_line_error(lambda: read_cifar("cifar10", tmp_path), folder / "test_batch", "3072")
    del bad[b"data"]
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    check_one_line_error(lambda: read_cifar("cifar10", tmp_path), folder / "test_batch", "'data'")


def test_pickle_with_foreign_objects_is_refused(tmp_path):
    folder, _ = write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    check_one_line_error(lambda: read_cifar("cifar10", tmp_path), folder / "test_batch")


def test_str_keys_are_accepted(tmp_path):
    folder, dicts = write_cifar10(tmp_path)
    plain = {k.decode(): v for k, v in dicts["test_batch"].items()}
    buf = io.BytesIO()
    pickle.dump(plain, buf)
    (folder / "test_batch").write_bytes(buf.getvalue())
    assert read_cifar("cifar10", tmp_path)[2].shape == (5, 3, 32, 32)


def test_registry_entry_points(tmp_path):
    from esdsnn.data import DataRequest
    from esdsnn.data.cifar import load_cifar10, load_cifar100
    from esdsnn.errors import ConfigError

    write_cifar10(tmp_path)
    b = load_cifar10(DataRequest(data_path=str(tmp_path), batch_size=8, seed=0, T=6, eval_batch_size=2))
    assert b.name == "cifar10" and len(b.test) == 3 and len(b.train) == 4
    with pytest.raises(ConfigError, match="cifar-100-python"):
        load_cifar100(DataRequest(data_path=None, batch_size=8, seed=0))
