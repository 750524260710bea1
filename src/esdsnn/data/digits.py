"""The bundled default data set: scikit-learn's 8×8 handwritten digits (1797 images, 10 classes).

The images ship with scikit-learn, so nothing is downloaded. Pixel values 0..16 are scaled to
0..1, then normalised with the training set's mean and std. The train/test split is fixed and
stratified (it does not depend on the run's seed), so every run and every ``eval`` sees the same
test set.
"""

from __future__ import annotations

import numpy as np
import torch

from esdsnn.data.arrays import make_bundle
from esdsnn.data.base import DataBundle, DataRequest
from esdsnn.errors import ConfigError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of the fixed stratified split (``TEST_FRACTION`` of each class is
    held out; the same on every call)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    return train, test


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split: ``(x_train, y_train, x_test, y_test)``, x float32 ``[N,1,8,8]``
    in 0..1 (not yet normalised), y int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    train, test = split_indices(y)
    return x[train], y[train], x[test], y[test]


def load(request: DataRequest) -> DataBundle:
    """Digits as a :class:`DataBundle` (static images; ``T`` is not needed)."""
    if request.data_path is not None:
        raise ConfigError(
            "the digits data set is bundled with scikit-learn and takes no --data-path "
            "(use --dataset npz for your own arrays)"
        )
    x_train, y_train, x_test, y_test = digits_split()
    return make_bundle(
        "digits",
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test),
        torch.from_numpy(y_test),
        num_classes=10,
        batch_size=request.batch_size,
        eval_batch_size=request.eval_batch_size,
        seed=request.seed,
        device=request.device,
    )
