"""Make the second data set of the bf16 spike-stage measurement (docs/performance.md):
six classes of noisy 8×8 line drawings — horizontal bar, vertical bar, diagonal, anti-diagonal,
square outline, cross — of random size (3–6 px) and position, plus Gaussian pixel noise
(σ = 0.35), as float images; 1500 training and 600 test images. The same seed gives the same
bytes.

    python examples/make_bars8_npz.py --out runs/shapes8.npz
    esdsnn train --dataset npz --data-path runs/shapes8.npz --arch digits_resnet --epochs 3 \\
        --seed 0 --threads 1 --spike-dtype bf16          # and --spike-dtype float32; seeds 0, 1, 2
"""

from __future__ import annotations

import argparse

import numpy as np


def draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((8, 8), np.float32)
    s = int(rng.integers(3, 7))
    r0, c0 = (int(v) for v in rng.integers(0, 9 - s, size=2))
    steps = np.arange(s)
    if kind == 0:
        img[r0 + s // 2, c0 : c0 + s] = 1
    elif kind == 1:
        img[r0 : r0 + s, c0 + s // 2] = 1
    elif kind == 2:
        img[steps + r0, steps + c0] = 1
    elif kind == 3:
        img[steps + r0, c0 + s - 1 - steps] = 1
    elif kind == 4:
        img[r0, c0 : c0 + s] = img[r0 + s - 1, c0 : c0 + s] = 1
        img[r0 : r0 + s, c0] = img[r0 : r0 + s, c0 + s - 1] = 1
    else:
        img[r0 + s // 2, c0 : c0 + s] = 1
        img[r0 : r0 + s, c0 + s // 2] = 1
    return np.clip(img + rng.normal(0, 0.35, img.shape).astype(np.float32), -1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="shapes8.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 6, n)
        return np.stack([draw(int(c), rng) for c in y])[:, None], y.astype(np.int64)

    x_train, y_train = split(1500)
    x_test, y_test = split(600)
    np.savez(args.out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.out}: {x_train.shape} train, {x_test.shape} test, classes {np.bincount(y_train).tolist()}")


if __name__ == "__main__":
    main()
