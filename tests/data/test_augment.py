"""Batched augmentation: shapes, value ranges, per-image randomness, reproducibility."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from esdsnn.data import augment as A
from esdsnn.data.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    AugmentConfig,
    CifarAugment,
    EventAugment,
    Normalize,
)
from esdsnn.data.base import TensorBatches

torch.set_num_threads(1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=16, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen(seed))


def bounds(mean, std):
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return lo, hi


def test_full_cifar_augment_keeps_shape_and_range():
    x = images(32)
    out = CifarAugment(CIFAR10_MEAN, CIFAR10_STD, AugmentConfig())(x, gen())
    assert out.shape == x.shape and out.dtype == torch.float32
    lo, hi = bounds(CIFAR10_MEAN, CIFAR10_STD)
    assert torch.all(out >= lo - 1e-5) and torch.all(out <= hi + 1e-5)
    assert torch.isfinite(out).all()


def test_cifar_augment_is_reproducible_and_seed_dependent():
    x = images(32)
    aug = CifarAugment(CIFAR10_MEAN, CIFAR10_STD, AugmentConfig())
    a, b, c = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_leaves_global_rng_untouched():
    state = torch.get_rng_state()
    CifarAugment(CIFAR10_MEAN, CIFAR10_STD, AugmentConfig())(images(8), gen())
    assert torch.equal(torch.get_rng_state(), state)


def test_all_switched_off_is_plain_normalisation():
    x = images(8)
    off = AugmentConfig(crop=False, flip=False, autoaugment=False, cutout=False)
    out = CifarAugment(CIFAR10_MEAN, CIFAR10_STD, off)(x, gen())
    assert torch.allclose(out, Normalize(CIFAR10_MEAN, CIFAR10_STD)(x))


def test_normalize_values_and_determinism():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = Normalize(CIFAR10_MEAN, CIFAR10_STD)(x, gen(0))
    expect = torch.tensor([(1 - m) / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)])
    assert torch.allclose(out[0, :, 0, 0], expect)
    assert torch.equal(out, Normalize(CIFAR10_MEAN, CIFAR10_STD)(x, gen(5)))


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8) + 1
    out = A.random_crop(x, gen(3), padding=2)
    xp = F.pad(x, (2, 2, 2, 2))
    for b in range(4):
        windows = [xp[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)


def test_flip_mirrors_some_samples_only():
    x = torch.rand(64, 3, 4, 4, generator=gen())
    out = A.random_flip(x, gen(1))
    same = [torch.equal(out[b], x[b]) for b in range(64)]
    flipped = [torch.equal(out[b], x[b].flip(-1)) for b in range(64)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 0 < sum(flipped) < 64


def test_cutout_zeroes_one_clipped_square_per_sample():
    x = torch.ones(200, 3, 32, 32)
    out = A.cutout(x, gen(0), size=16)
    zeros = (out == 0).all(dim=1)  # same hole on every channel
    counts = zeros.flatten(1).sum(1)
    assert torch.all(counts > 0) and torch.all(counts <= 256)
    assert (counts == 256).any()  # a hole fully inside the image
    assert ((out == 0) | (out == 1)).all()
    for b in range(5):  # the hole is a rectangle
        rows, cols = zeros[b].nonzero(as_tuple=True)
        h = rows.max() - rows.min() + 1
        w = cols.max() - cols.min() + 1
        assert h * w == counts[b] and h <= 16 and w <= 16


def official_cutout_rows(centre, size, length=16):
    """The rows (or columns) the official ``Cutout(n_holes=1, length=16)`` zeroes for a hole
    centred at ``centre``: ``[clip(c − length//2, 0, size), clip(c + length//2, 0, size))``."""
    return max(centre - length // 2, 0), min(centre + length // 2, size)


def test_the_recipes_cutout_is_the_official_16_pixel_square():
    """The CIFAR recipe as a run gets it (the resolved config's augmentation, crop, flip and
    AutoAugment off to see the hole alone): every hole is a square the official Cutout of side 16
    cuts for some centre, and holes inside the image are 16×16 (a side-8 Cutout fails both)."""
    from esdsnn.config import TrainConfig

    recipe = TrainConfig(dataset="cifar10").resolved().augment
    assert recipe.cutout is True
    aug = CifarAugment(
        CIFAR10_MEAN, CIFAR10_STD, dataclasses.replace(recipe, crop=False, flip=False, autoaugment=False)
    )
    out = aug(torch.full((300, 3, 32, 32), 200, dtype=torch.uint8), gen(4))
    black = Normalize(CIFAR10_MEAN, CIFAR10_STD)(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    hole = torch.isclose(out, black.expand_as(out)).all(dim=1)  # [N, H, W]
    spans = {official_cutout_rows(c, 32) for c in range(32)}
    inside = 0
    for b in range(len(out)):
        rows, cols = hole[b].nonzero(as_tuple=True)
        top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        assert int(hole[b].sum()) == (bottom - top) * (right - left), b  # one rectangle
        assert (top, bottom) in spans and (left, right) in spans, (b, top, bottom, left, right)
        inside += (bottom - top, right - left) == (16, 16)
    assert inside > 50  # centres 8..24 on both axes: about a quarter of the samples


def test_augmented_images_of_one_batch_differ():
    x = images(1).expand(16, -1, -1, -1).contiguous()
    out = CifarAugment(CIFAR10_MEAN, CIFAR10_STD, AugmentConfig())(x, gen(0))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 16


def test_roll_shifts_each_sample_circularly_within_five_pixels():
    x = torch.rand(20, 2, 3, 12, 12, generator=gen())
    out = A.random_roll(x, gen(1), max_shift=5)
    for b in range(20):
        ok = [
            torch.equal(out[b], torch.roll(x[b], (dy, dx), dims=(-2, -1))) for dy in range(-5, 6) for dx in range(-5, 6)
        ]
        assert any(ok)


FIXTURES = Path(__file__).with_name("fixtures")


def test_rotation_equals_torchvisions_tensor_rotate_pixel_for_pixel():
    """Golden outputs of torchvision 0.28.0's ``F.rotate`` (nearest, fill 0: what the official
    NDA's ``RandomRotation(30)`` runs on float frames ``[T, 2, H, W]``), made by
    ``fixtures/make_torchvision_rotate.py``: every pixel equal, at even and odd sizes, at ±30°,
    0°, 90°, 180° and awkward angles; all samples of a batch rotated in one call."""
    golden = np.load(FIXTURES / "torchvision_rotate.npz")
    k = 0
    while f"input_{k}" in golden.files:
        frames = torch.from_numpy(golden[f"input_{k}"]).float()  # [T, C, H, W]
        angles = golden[f"angles_{k}"].tolist()
        batch = frames.reshape(1, -1, *frames.shape[-2:]).expand(len(angles), -1, -1, -1)
        ours = A.rotate_nearest(batch.contiguous(), angles).reshape(len(angles), *frames.shape)
        assert np.array_equal(ours.numpy().astype(np.uint8), golden[f"output_{k}"]), k
        assert torch.equal(ours, ours.round())  # nearest: no blending
        k += 1
    assert k == 4


def test_random_rotate_turns_all_frames_of_a_sample_by_one_angle_within_30_degrees():
    frames = torch.randint(1, 5, (6, 3, 2, 20, 20), generator=gen()).float()
    out = A.random_rotate(frames, gen(1), degrees=30.0)
    angles = ((torch.rand(6, generator=gen(1), dtype=torch.float64) * 2 - 1) * 30.0).tolist()
    assert len({round(a, 3) for a in angles}) == 6 and max(map(abs, angles)) <= 30
    for b, angle in enumerate(angles):  # each frame alone, by the angle drawn for its sample
        for t in range(3):
            ref = A.rotate_nearest(frames[b, t][None], [angle])[0]
            assert torch.equal(out[b, t], ref), (b, t)
    assert (out == 0).any() and set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}  # zero fill
    assert torch.equal(A.random_rotate(frames, gen(), degrees=0.0), frames)


def test_event_augment_is_time_major_and_eval_is_resize_only():
    frames = torch.randint(0, 4, (3, 5, 2, 128, 128), dtype=torch.uint8, generator=gen())
    ev = EventAugment(48, train=False)
    out = ev(frames)
    assert out.shape == (5, 3, 2, 48, 48) and out.dtype == torch.float32 and out.is_contiguous()
    ref = F.interpolate(frames[1].float(), size=(48, 48), mode="bilinear", antialias=True)
    assert torch.allclose(out[:, 1], ref, atol=1e-5)
    assert torch.equal(out, ev(frames, gen(9)))


def test_event_augment_train_reproducible_and_varied():
    frames = torch.randint(0, 4, (1, 4, 2, 128, 128), dtype=torch.uint8, generator=gen())
    frames = frames.expand(12, -1, -1, -1, -1).contiguous()
    ev = EventAugment(48, train=True)
    a, b = ev(frames, gen(3)), ev(frames, gen(3))
    assert a.shape == (4, 12, 2, 48, 48)
    assert torch.equal(a, b)
    assert len({tuple(a[:, i].flatten().tolist()) for i in range(12)}) > 6
    assert a.min() >= 0


def test_measure_loader_throughput_counts_samples_per_second():
    x = images(40)
    y = torch.arange(40) % 10
    src = TensorBatches(x, y, 8, shuffle=True, augment=Normalize(CIFAR10_MEAN, CIFAR10_STD))
    rate = A.measure_loader_throughput(src, batches=6)  # more than one pass: wraps around
    assert rate > 0
    with pytest.raises(ValueError):
        A.measure_loader_throughput(src, batches=0)
