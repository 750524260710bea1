"""A validation split held out of the training data, to select the best epoch honestly.

Without a recipe that says otherwise, the best checkpoint of a run is chosen on data the model
does not train on and the test set is measured only at the end. The split is stratified (each
class keeps its share) and seeded, so ``eval``, ``report`` and a resumed run rebuild exactly the
same one from the saved config.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from esdsnn.data.base import DataBundle, TensorBatches
from esdsnn.errors import ConfigError


def validation_size(n: int, n_classes: int, fraction: float) -> int:
    """How many of ``n`` training samples a split of ``fraction`` holds out (at least one per class)."""
    return max(int(round(fraction * n)), n_classes) if fraction > 0 else 0


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` indices: ``fraction`` of each class held out (at least one sample per
    class), stratified and seeded, each sorted. A class with a single training sample stays in
    training (holding it out would leave the class nothing to learn from)."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(labels, return_counts=True)
    single = np.isin(labels, classes[counts < 2])
    eligible = np.flatnonzero(~single)
    n_classes = int((counts >= 2).sum())
    n_val = validation_size(len(eligible), n_classes, fraction)
    if n_classes == 0 or n_val >= len(eligible) - n_classes + 1:
        raise ConfigError(
            f"val_fraction {fraction:g} leaves too few training samples ({len(labels)} in all, "
            f"{len(classes)} classes, {len(classes) - n_classes} of them with a single sample); lower "
            "--val-fraction, or 0 to select on the test set"
        )
    train, val = train_test_split(eligible, test_size=n_val, stratify=labels[eligible], random_state=seed)
    return np.sort(np.concatenate([train, np.flatnonzero(single)])), np.sort(val)


def hold_out_validation(bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
    """``bundle`` with ``fraction`` of its training samples moved to ``bundle.val``; validation
    batches are prepared like the test batches (no augmentation)."""
    if fraction <= 0:
        return bundle
    train, test = bundle.train, bundle.test
    if not isinstance(train, TensorBatches) or not isinstance(test, TensorBatches):
        raise ConfigError(
            f"--val-fraction needs an in-memory data set; {bundle.name} is read from files in "
            f"batches: use --val-fraction 0 (it keeps its own test split)"
        )
    labels = train.y.cpu().numpy()
    train_idx, val_idx = (torch.from_numpy(i).to(train.x.device) for i in split_indices(labels, fraction, seed))
    val = test.with_samples(train.x[val_idx], train.y[val_idx])
    return dataclasses.replace(bundle, train=train.subset(train_idx), val=val)


__all__ = ["hold_out_validation", "split_indices", "validation_size"]
