"""npz data sets: layouts, dtypes, normalisation, and errors that name the file."""

import numpy as np
import pytest
import torch

from esdsnn.data import list_datasets, load_dataset
from esdsnn.data.arrays import detect_layout, read_npz
from esdsnn.errors import ConfigError, DataError


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _all(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(7, 6, 5, 3), dtype=np.uint8)
    path = _write(
        tmp_path / "a.npz",
        x_train=x_train,
        y_train=np.arange(20) % 4,
        x_test=x_test,
        y_test=np.array([0, 1, 2, 3, 0, 1, 2]),
    )
    bundle = load_dataset("npz", data_path=path, batch_size=8, seed=1)
    assert bundle.input_shape == (3, 6, 5) and bundle.num_classes == 4
    x, y = _all(bundle.train)
    assert x.shape == (20, 3, 6, 5) and x.dtype == torch.float32 and y.dtype == torch.int64
    # per-channel normalisation with the training set's statistics
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    ref = x_train.transpose(0, 3, 1, 2).astype(np.float64) / 255
    mean, std = ref.mean(axis=(0, 2, 3)), ref.std(axis=(0, 2, 3))
    xt, yt = _all(bundle.test)
    expected = (x_test.transpose(0, 3, 1, 2) / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(xt.numpy(), expected, atol=1e-5)
    assert yt.tolist() == [0, 1, 2, 3, 0, 1, 2]


def test_nchw_float(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.normal(5.0, 2.0, size=(16, 2, 4, 4))  # float64, not scaled by 1/255
    x_test = rng.normal(5.0, 2.0, size=(5, 2, 4, 4)).astype(np.float32)
    path = _write(
        tmp_path / "b.npz",
        x_train=x_train,
        y_train=np.arange(16) % 2,
        x_test=x_test.astype(np.float64),
        y_test=np.array([[0], [1], [1], [0], [1]]),
    )
    bundle = load_dataset("npz", data_path=path, batch_size=16, seed=0)
    assert bundle.input_shape == (2, 4, 4) and bundle.num_classes == 2
    x, _ = _all(bundle.train)
    assert x.dtype == torch.float32
    mean, std = x_train.mean(axis=(0, 2, 3)), x_train.std(axis=(0, 2, 3))
    xt, yt = _all(bundle.test)
    np.testing.assert_allclose(xt.numpy(), (x_test - mean[None, :, None, None]) / std[None, :, None, None], atol=1e-4)
    assert yt.tolist() == [0, 1, 1, 0, 1]


def test_grayscale_nhw_and_float_labels(tmp_path):
    x = np.zeros((6, 5, 5), dtype=np.uint8)
    x[::2] = 255
    path = _write(
        tmp_path / "c.npz", x_train=x, y_train=np.array([0.0, 1, 2, 0, 1, 2]), x_test=x[:2], y_test=np.array([2, 0])
    )
    x_train, y_train, _, _ = read_npz(path)
    assert x_train.shape == (6, 1, 5, 5) and x_train.dtype == np.uint8 and y_train.dtype == np.int64
    bundle = load_dataset("npz", data_path=path, batch_size=4, seed=0)
    assert bundle.input_shape == (1, 5, 5) and bundle.num_classes == 3


@pytest.mark.parametrize(
    "shape, layout",
    [
        ((10, 32, 32, 3), "NHWC"),
        ((10, 3, 32, 32), "NCHW"),
        ((10, 28, 28, 1), "NHWC"),
        ((10, 1, 28, 28), "NCHW"),
        ((10, 2, 48, 48), "NCHW"),
        ((10, 8, 8, 8), "NCHW"),
    ],
)
def test_detect_layout(shape, layout):
    assert detect_layout(shape) == layout


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="nope.npz"):
        load_dataset("npz", data_path=str(path), batch_size=4, seed=0)


def test_not_an_npz(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("hello, not numpy\n")
    with pytest.raises(DataError, match="text.npz"):
        read_npz(path)


def test_truncated_npz(tmp_path):
    path = tmp_path / "cut.npz"
    x = np.zeros((50, 3, 8, 8), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.zeros(50), x_test=x, y_test=np.zeros(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.npz"):
        read_npz(path)


def test_npy_is_not_npz(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.zeros((2, 2)))
    with pytest.raises(DataError, match="single.npy"):
        read_npz(path)


def test_missing_keys_are_named(tmp_path):
    path = _write(tmp_path / "d.npz", x_train=np.zeros((4, 1, 2, 2)), y_train=np.zeros(4))
    with pytest.raises(DataError, match=r"d\.npz lacks the key\(s\) x_test, y_test"):
        read_npz(path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"y_train": np.array([0, 1, -1, 0])}, "negative"),
        ({"y_train": np.array([0, 1, 0])}, "3 labels but there are 4 images"),
        ({"y_train": np.array([0.5, 1, 0, 1])}, "non-integer"),
        ({"x_train": np.full((4, 1, 2, 2), np.nan)}, "NaN"),
        ({"x_test": np.zeros((2, 1, 3, 3))}, "x_test samples are"),
        ({"x_train": np.zeros((4, 2))}, "expected images"),
    ],
)
def test_bad_contents(tmp_path, change, message):
    arrays = {
        "x_train": np.zeros((4, 1, 2, 2)),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 1, 2, 2)),
        "y_test": np.array([0, 1]),
    }
    arrays.update(change)
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as info:
        read_npz(path)
    assert "bad.npz" in str(info.value)


def test_npz_needs_a_path():
    with pytest.raises(ConfigError, match="data-path"):
        load_dataset("npz", batch_size=4, seed=0)


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", batch_size=4, seed=0)
    assert set(list_datasets()) == {"digits", "npz", "cifar10", "cifar100", "cifar10-dvs", "imagenet"}
    for name in ("cifar10", "cifar100", "cifar10-dvs", "imagenet"):  # no default location: a clear error
        with pytest.raises(ConfigError, match="data-path"):
            load_dataset(name, batch_size=4, seed=0)
