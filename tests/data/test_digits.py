"""The bundled digits: a fixed, stratified, disjoint split, normalised with training statistics."""

import math

import numpy as np
import pytest
import torch

from esdsnn.data import load_dataset
from esdsnn.data.digits import TEST_FRACTION, digits_split, split_indices
from esdsnn.errors import ConfigError


def _labels():
    from sklearn.datasets import load_digits

    return load_digits().target


def test_split_is_disjoint_and_complete():
    y = _labels()
    train, test = split_indices(y)
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    assert len(test) == math.ceil(TEST_FRACTION * len(y))  # scikit-learn rounds the test size up


def test_split_is_fixed():
    a = digits_split()
    b = digits_split()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_split_is_stratified():
    y = _labels()
    train, test = split_indices(y)
    for k in range(10):
        total = int((y == k).sum())
        in_test = int((y[test] == k).sum())
        assert abs(in_test - TEST_FRACTION * total) <= 1, (k, in_test, total)
        assert int((y[train] == k).sum()) + in_test == total


def test_images_and_labels():
    x_train, y_train, x_test, y_test = digits_split()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(y_test.tolist()) == set(range(10))


def test_bundle_normalised_and_batched():
    bundle = load_dataset("digits", batch_size=100, seed=60)
    assert bundle.name == "digits" and bundle.num_classes == 10
    assert bundle.input_shape == (1, 8, 8) and bundle.in_channels == 1 and bundle.time_steps is None
    xs, ys = zip(*bundle.train)
    x = torch.cat(xs)
    assert x.shape == (1437, 1, 8, 8) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    assert len(bundle.train) == 15 and xs[0].shape[0] == 100
    # the test set comes in a fixed order, the training set in a seeded order per epoch
    first = torch.cat([y for _, y in bundle.test])
    assert torch.equal(first, torch.cat([y for _, y in bundle.test]))
    assert torch.equal(first, torch.from_numpy(digits_split()[3]))
    order0 = torch.cat(ys)
    bundle.train.set_epoch(1)
    order1 = torch.cat([y for _, y in bundle.train])
    assert not torch.equal(order0, order1)
    again = load_dataset("digits", batch_size=100, seed=60)
    again.train.set_epoch(1)
    assert torch.equal(order1, torch.cat([y for _, y in again.train]))


def test_digits_takes_no_data_path():
    with pytest.raises(ConfigError, match="data-path"):
        load_dataset("digits", batch_size=8, seed=0, data_path="x.npz")
