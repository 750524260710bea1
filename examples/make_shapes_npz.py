"""Make a small image data set of drawn shapes as an ``.npz`` file (no download needed).

Six classes -- circle, ring, square, diamond, triangle, cross -- each drawn once per image with a
random centre, size, rotation jitter and colour on a random background, then cluttered with a few
thin lines in other colours, a brightness gradient and pixel noise. Shapes are rendered with 4×4
supersampling, so edges are anti-aliased like a downscaled photo. Small sizes make square vs
diamond, circle vs ring and diamond vs triangle genuinely confusable, so the set is a real (small)
benchmark, not a trivially separable one.

The file holds what ``esdsnn train --dataset npz`` reads: ``x_train``, ``y_train``, ``x_test``,
``y_test`` with images uint8 ``[N, H, W, 3]`` (NHWC) and labels int64; plus ``class_names``.
The same ``--seed`` gives the same bytes.

    python examples/make_shapes_npz.py --out shapes16.npz            # 3000 train / 1000 test, 16×16
    esdsnn train --dataset npz --data-path shapes16.npz --arch digits_resnet --epochs 3 \\
        --batch-size 64 --lr 0.1 --threads 1
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import numpy as np

CLASSES = ("circle", "ring", "square", "diamond", "triangle", "cross")
SUPERSAMPLE = 4


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of "radius" ``r`` in rotated, centred coordinates ``(u, v)``."""
    if kind == "circle":
        return u * u + v * v <= r * r
    if kind == "ring":
        width = max(1.1, 0.3 * r)
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (r - width) ** 2)
    if kind == "square":
        half = 0.8 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.1 * r
    if kind == "triangle":  # pointing up (v grows downwards in image rows)
        inside = np.ones_like(u, dtype=bool)
        corners = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
            inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
        return inside
    if kind == "cross":
        arm = max(0.8, 0.3 * r)
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    raise ValueError(f"unknown shape {kind!r}")


def _shape_colour(rng: np.random.Generator, background: np.ndarray, min_gain: float = 0.3) -> np.ndarray:
    """A random colour clearly brighter than the (dark) background."""
    while True:
        colour = rng.uniform(0.35, 1.0, 3)
        if colour.mean() - background.mean() >= min_gain:
            return colour


def _line_mask(xs: np.ndarray, ys: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    d = p1 - p0
    length2 = float(d @ d) or 1e-9
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / length2, 0.0, 1.0)
    return (xs - p0[0] - t * d[0]) ** 2 + (ys - p0[1] - t * d[1]) ** 2 <= (width / 2) ** 2


def draw(
    label: int,
    size: int,
    rng: np.random.Generator,
    grid: tuple[np.ndarray, np.ndarray],
    noise: float = 0.08,
    clutter: int = 3,
) -> np.ndarray:
    """One float image ``[size, size, 3]`` in 0..1 showing shape ``CLASSES[label]``."""
    xs, ys = grid  # pixel coordinates of the supersampled grid, in image pixels
    background = rng.uniform(0.0, 0.45, 3)
    canvas = np.broadcast_to(background, (*xs.shape, 3)).copy()

    # distractors first: thin lines in random colours, behind the shape
    for _ in range(rng.integers(0, clutter + 1)):
        p0, p1 = rng.uniform(-1, size + 1, 2), rng.uniform(-1, size + 1, 2)
        mask = _line_mask(xs, ys, p0, p1, width=rng.uniform(0.6, 1.2))
        canvas[mask] = rng.uniform(0.1, 0.8, 3)

    r = rng.uniform(0.2, 0.42) * size
    margin = 0.7 * r
    cx, cy = rng.uniform(margin, size - margin, 2)
    theta = rng.uniform(-0.3, 0.3)  # about ±17°: squares stay squares, diamonds diamonds
    c, s = math.cos(theta), math.sin(theta)
    u = c * (xs - cx) + s * (ys - cy)
    v = -s * (xs - cx) + c * (ys - cy)
    canvas[_shape_mask(CLASSES[label], u, v, r)] = _shape_colour(rng, background)

    # down-sample (anti-aliasing), then a brightness gradient and pixel noise
    img = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    gx, gy = rng.uniform(-0.15, 0.15, 2)
    ramp = gx * (np.arange(size)[None, :] / size - 0.5) + gy * (np.arange(size)[:, None] / size - 0.5)
    img = img + ramp[:, :, None] + rng.normal(0.0, noise, img.shape)
    return np.clip(img, 0.0, 1.0)


def make_split(
    n: int, size: int, rng: np.random.Generator, noise: float, clutter: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8 NHWC) with balanced labels in random order."""
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    offsets = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    grid = np.meshgrid(offsets, offsets)  # xs vary along columns, ys along rows
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = np.round(draw(int(label), size, rng, grid, noise, clutter) * 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def make_shapes(
    n_train: int = 3000, n_test: int = 1000, size: int = 16, seed: int = 0, noise: float = 0.08, clutter: int = 3
) -> dict[str, np.ndarray]:
    """The data set as a dict of arrays (what :func:`main` saves)."""
    rng = np.random.default_rng(seed)
    x_train, y_train = make_split(n_train, size, rng, noise, clutter)
    x_test, y_test = make_split(n_test, size, rng, noise, clutter)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.array(CLASSES),
    }


def save_preview(data: dict[str, np.ndarray], path: Path, per_class: int = 8) -> None:
    """A grid of training images, one row per class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(per_class * 0.9, len(CLASSES) * 0.95), layout="constrained")
    FigureCanvasAgg(fig)
    for row, name in enumerate(CLASSES):
        picks = np.flatnonzero(data["y_train"] == row)[:per_class]
        for col, index in enumerate(picks):
            ax = fig.add_subplot(len(CLASSES), per_class, row * per_class + col + 1)
            ax.imshow(data["x_train"][index], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.savefig(path, dpi=100)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="shapes16.npz", help="output .npz file (default: shapes16.npz)")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default: 16)")
    parser.add_argument("--train", type=int, default=3000, help="training images (default: 3000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (default: 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.08, help="std of the pixel noise, 0..1 scale (default: 0.08)")
    parser.add_argument("--clutter", type=int, default=3, help="at most this many distractor lines (default: 3)")
    parser.add_argument("--preview", metavar="PNG", help="also save a grid of examples")
    args = parser.parse_args(argv)
    if args.size < 8 or args.train < len(CLASSES) or args.test < len(CLASSES):
        parser.error(f"need --size >= 8 and at least {len(CLASSES)} train and test images")
    data = make_shapes(args.train, args.test, args.size, args.seed, args.noise, args.clutter)
    out = Path(args.out)
    np.savez_compressed(out, **data)
    print(
        f"wrote {out}: {args.train} train / {args.test} test images, {args.size}x{args.size} RGB, "
        f"{len(CLASSES)} classes ({', '.join(CLASSES)})"
    )
    if args.preview:
        save_preview(data, Path(args.preview))
        print(f"preview in {args.preview}")


if __name__ == "__main__":
    main()
