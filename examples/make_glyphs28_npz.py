"""Make a harder 28×28 grayscale ``.npz`` set than digits28 (no download needed): 26 classes,
the letters A–Z, each drawn upper- or lower-case from one of the 21 text fonts bundled with
matplotlib (DejaVu Sans, Sans Mono and Serif, STIX and Computer Modern, in their bold and
italic styles), so one class holds shapes as different as ``A`` and ``a``, or ``G`` and ``g``.

Every image warps one glyph under a random affine map (rotation ±15°, scale 0.75–1.1, shear
±0.3, shift ±3 px) with a random stroke weight (thinned or thickened by a pixel of the 48 px
source), stroke gain and gamma, puts part of another letter behind it (faint, off-centre: the
clutter), a blurred background blotch and pixel noise. Test images are drawn the same way, with
their own random warps. The same ``--seed`` gives the same bytes.

    python examples/make_glyphs28_npz.py --out runs/glyphs28.npz      # 60,000 + 10,000, ~35 MB
    esdsnn train --dataset npz --data-path runs/glyphs28.npz --epochs 2

The file holds ``x_train`` uint8 ``[N, 28, 28]``, ``y_train`` int64 (0 = A ... 25 = Z),
``x_test``, ``y_test`` and ``class_names``.
"""

from __future__ import annotations

import argparse
import math
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 28
SOURCE = 48  # side of a rendered glyph before warping
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
)
CLASSES = tuple(string.ascii_uppercase)


def render(char: str, font: Path, supersample: int = 4) -> np.ndarray:
    """``char`` in ``font`` filled (even-odd, so holes stay open), fitted into a ``SOURCE``² box
    with a margin and its aspect ratio kept; float ``[SOURCE, SOURCE]`` in 0..1, anti-aliased."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as PolyPath
    from matplotlib.textpath import TextPath

    outline = TextPath((0, 0), char, size=1, prop=FontProperties(fname=str(font)))
    lo, hi = outline.vertices.min(0), outline.vertices.max(0)
    side = (hi - lo).max() / 0.8  # the glyph fills 80 % of the box
    n = SOURCE * supersample
    grid = (np.arange(n) + 0.5) / n - 0.5
    xs, ys = np.meshgrid(grid, -grid)  # rows go down, glyph y goes up
    points = np.stack([xs.ravel(), ys.ravel()], 1) * side + (lo + hi) / 2
    inside = np.zeros(len(points), bool)
    for polygon in outline.to_polygons(closed_only=True):
        inside ^= PolyPath(polygon).contains_points(points)
    return inside.reshape(SOURCE, supersample, SOURCE, supersample).mean((1, 3)).astype(np.float32)


def glyph_bank() -> tuple[np.ndarray, np.ndarray]:
    """Every class in every font, upper- and lower-case: images ``[K, SOURCE, SOURCE]``, labels ``[K]``."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    images, labels = [], []
    for font in FONTS:
        for label, letter in enumerate(CLASSES):
            for char in (letter, letter.lower()):
                images.append(render(char, folder / font))
                labels.append(label)
    return np.stack(images), np.array(labels, np.int64)


def affine(
    n: int, rng: np.random.Generator, rotation: float, scale: tuple[float, float], shear: float, shift_px: float
) -> torch.Tensor:
    """``n`` random affine maps as ``affine_grid`` thetas ``[n, 2, 3]``."""
    angle = rng.uniform(-rotation, rotation, n) * math.pi / 180
    zoom = rng.uniform(*scale, n)
    skew = rng.uniform(-shear, shear, n)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + skew
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, :, 2] = rng.uniform(-shift_px, shift_px, (n, 2)) * 2 / SIZE
    return torch.from_numpy(theta)


def draw(
    bank: np.ndarray, picks: np.ndarray, rng: np.random.Generator, clutter: float, noise: float, chunk: int = 4096
) -> np.ndarray:
    """Images uint8 ``[len(picks), SIZE, SIZE]`` of the bank's glyphs ``picks``, warped and cluttered."""
    n = len(picks)
    out = np.empty((n, SIZE, SIZE), np.uint8)
    source = torch.from_numpy(bank)[:, None]
    thick = F.max_pool2d(source, 3, 1, 1)  # one source pixel bolder
    thin = -F.max_pool2d(-source, 3, 1, 1)  # one source pixel lighter (thin strokes may break: hard cases)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = torch.from_numpy(picks[start : start + m])
        weight = torch.from_numpy(rng.integers(0, 3, m))  # 0 regular, 1 bold, 2 light
        glyph = torch.where(
            (weight == 1)[:, None, None, None],
            thick[idx],
            torch.where((weight == 2)[:, None, None, None], thin[idx], source[idx]),
        )
        grid = F.affine_grid(affine(m, rng, 15, (0.75, 1.1), 0.3, 3), [m, 1, SIZE, SIZE], align_corners=False)
        x = F.grid_sample(glyph, grid, align_corners=False)[:, 0].numpy()
        x = np.clip(x, 0, 1) ** rng.uniform(0.6, 1.6, (m, 1, 1)) * rng.uniform(0.6, 1.0, (m, 1, 1))
        # clutter: part of another glyph, faint and pushed off-centre, behind the letter
        other = source[torch.from_numpy(rng.integers(0, len(bank), m))]
        theta = affine(m, rng, 30, (0.7, 1.2), 0.3, 0)
        side = rng.choice([-1.0, 1.0], (m, 2)) * rng.uniform(0.7, 1.1, (m, 2))
        theta[:, :, 2] = torch.from_numpy(side.astype(np.float32))
        grid = F.affine_grid(theta, [m, 1, SIZE, SIZE], align_corners=False)
        behind = F.grid_sample(other, grid, align_corners=False)[:, 0].numpy()
        x = np.maximum(x, behind * rng.uniform(0, clutter, (m, 1, 1)))
        blotch = torch.from_numpy(rng.uniform(0, 0.25, (m, 1, 4, 4)).astype(np.float32))
        x = x + F.interpolate(blotch, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[:, 0].numpy().clip(
            0, None
        )
        x = x + rng.normal(0, noise, x.shape)
        out[start : start + m] = np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def make(n_train: int, n_test: int, seed: int, clutter: float = 0.6, noise: float = 0.08) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    bank, labels = glyph_bank()
    pick_train = rng.integers(0, len(bank), n_train)
    pick_test = rng.integers(0, len(bank), n_test)
    return {
        "x_train": draw(bank, pick_train, rng, clutter, noise),
        "y_train": labels[pick_train],
        "x_test": draw(bank, pick_test, rng, clutter, noise),
        "y_test": labels[pick_test],
        "class_names": np.array(CLASSES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="glyphs28.npz")
    parser.add_argument("--train", type=int, default=60_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clutter", type=float, default=0.6, help="brightest clutter glyph, 0..1 (default 0.6)")
    parser.add_argument("--noise", type=float, default=0.08, help="std of the pixel noise, 0..1 scale (default 0.08)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = make(args.train, args.test, args.seed, args.clutter, args.noise)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {args.train} train / {args.test} test images, 28x28 uint8, {len(CLASSES)} classes")


if __name__ == "__main__":
    main()
