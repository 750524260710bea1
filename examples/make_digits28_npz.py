"""Make a 60,000 + 10,000 image, 28×28 grayscale, 10-class ``.npz`` set from real handwriting
(no download needed): an MNIST-sized stand-in for trying ``esdsnn train --dataset npz``.

Each image is one of scikit-learn's 8×8 handwritten digits (1797 scans of 43 writers, bundled
with scikit-learn), upsampled bilinearly to 28×28 under a random affine warp (rotation ±15°,
scale 0.8–1.15, shear ±0.25, shift ±3 px), with a random stroke gain and gamma, a blurred
background blotch and pixel noise. Training images come only from scikit-learn's training
split of esdsnn's bundled digits and test images only from its test split, so no test digit was
ever seen warped in training. The same ``--seed`` gives the same bytes.

    python examples/make_digits28_npz.py --out runs/digits28.npz     # ~55 MB, ~20 s
    esdsnn train --dataset npz --data-path runs/digits28.npz --epochs 2

The file holds ``x_train`` uint8 ``[60000, 28, 28]``, ``y_train`` int64, ``x_test``, ``y_test``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from esdsnn.data.digits import digits_split

SIZE = 28


def warp(images: np.ndarray, rng: np.random.Generator, chunk: int = 4096) -> np.ndarray:
    """``images`` float ``[N, 8, 8]`` in 0..1 → uint8 ``[N, 28, 28]`` under random warps and noise."""
    n = len(images)
    out = np.empty((n, SIZE, SIZE), np.uint8)
    angle = rng.uniform(-15, 15, n) * math.pi / 180
    scale = rng.uniform(0.8, 1.15, n)
    shear = rng.uniform(-0.25, 0.25, n)
    shift = rng.uniform(-3, 3, (n, 2)) * 2 / SIZE
    gain = rng.uniform(0.6, 1.0, n)
    gamma = rng.uniform(0.6, 1.6, n)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        m = len(range(*sl.indices(n)))
        cos, sin = np.cos(angle[sl]) / scale[sl], np.sin(angle[sl]) / scale[sl]
        theta = np.zeros((m, 2, 3), np.float32)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear[sl]
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta[:, :, 2] = shift[sl]
        src = torch.from_numpy(images[sl, None].astype(np.float32))
        src = F.pad(src, (1, 1, 1, 1))  # a blank border: the digit fits inside the 28×28 frame
        grid = F.affine_grid(torch.from_numpy(theta), [m, 1, SIZE, SIZE], align_corners=False)
        x = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()
        x = np.clip(x, 0, 1) ** gamma[sl, None, None] * gain[sl, None, None]
        blotch = rng.uniform(0, 0.25, (m, 1, 4, 4)).astype(np.float32)
        x = x + F.interpolate(torch.from_numpy(blotch), size=(SIZE, SIZE), mode="bicubic", align_corners=False)[
            :, 0
        ].numpy().clip(0, None)
        x = x + rng.normal(0, 0.06, x.shape)
        out[sl] = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def make(n_train: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x_tr, y_tr, x_te, y_te = digits_split()
    pick_tr = rng.integers(0, len(y_tr), n_train)
    pick_te = rng.integers(0, len(y_te), n_test)
    return {
        "x_train": warp(x_tr[pick_tr, 0], rng),
        "y_train": y_tr[pick_tr].astype(np.int64),
        "x_test": warp(x_te[pick_te, 0], rng),
        "y_test": y_te[pick_te].astype(np.int64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="digits28.npz")
    parser.add_argument("--train", type=int, default=60_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = make(args.train, args.test, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {args.train} train / {args.test} test images, 28x28 uint8, 10 classes")


if __name__ == "__main__":
    main()
