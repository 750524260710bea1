"""Batched uint8 image operations with Pillow's exact semantics, on any device.

The official ESD code augments CIFAR with PIL (``ImageOps``, ``ImageEnhance``,
``Image.transform``/``rotate``). These functions do the same arithmetic on whole batches
``[N, C, H, W]`` of uint8 tensors, each image with its own parameter, so the augmentation can run
on the training device and still give PIL's pixels:

- geometry follows PIL's sampling: output pixel ``(x, y)`` samples the input at
  ``M · (x + ½, y + ½)``; nearest neighbour truncates (translations accumulate their coordinate in
  double precision as PIL's scale path does, rotations use PIL's 16.16 fixed point), bicubic is
  PIL's ``a = −1`` kernel with edge clamping and truncation to uint8; outside the source: ``fill``;
- blends (colour, contrast, brightness, sharpness) compute ``in1 + f·(in2 − in1)`` in float32 and
  truncate, clipped to 0..255, as ``Image.blend`` does;
- grayscale is ITU-R 601-2 luma in PIL's fixed point ``(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16``;
- histogram ops (autocontrast, equalize) build PIL's per-channel look-up tables.

Images stay uint8 between operations, as PIL images do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

Fill = Union[int, Sequence[int]]


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _fill_tensor(fill: Fill, x: Tensor) -> Tensor:
    """``fill`` as a ``[1, C, 1, 1]`` tensor of ``x``'s dtype."""
    values = [fill] * x.shape[1] if isinstance(fill, (int, float)) else list(fill)
    if len(values) != x.shape[1]:
        raise ValueError(f"fill has {len(values)} values for {x.shape[1]} channels")
    return torch.tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def gather_pixels(x: Tensor, rows: Tensor, cols: Tensor, fill: Fill) -> Tensor:
    """``out[n, c, i, j] = x[n, c, rows[n, i, j], cols[n, i, j]]``, or ``fill`` where that
    source pixel lies outside the image. ``rows``/``cols``: integer ``[N, H', W']``."""
    n, c, h, w = x.shape
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, -1).expand(n, c, -1)
    out = x.reshape(n, c, h * w).gather(2, flat).view(n, c, *rows.shape[1:])
    return torch.where(inside.unsqueeze(1), out, _fill_tensor(fill, x))


def _pixel_centres(n: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Coordinates ``x + ½`` and ``y + ½`` of every output pixel, float64 ``[N, H, W]``."""
    ys = (torch.arange(h, device=device, dtype=torch.float64) + 0.5).view(1, h, 1).expand(n, h, w)
    xs = (torch.arange(w, device=device, dtype=torch.float64) + 0.5).view(1, 1, w).expand(n, h, w)
    return xs, ys


def _bicubic_weights(v1: Tensor, v2: Tensor, v3: Tensor, v4: Tensor, d: Tensor) -> Tensor:
    """PIL's cubic through four samples at fraction ``d`` (Geometry.c ``BICUBIC``, a = −1)."""
    p1 = v2
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return p1 + d * (p2 + d * (p3 + d * p4))


def affine_bicubic(x: Tensor, coeffs: Tensor, fill: Fill) -> Tensor:
    """``Image.transform(size, AFFINE, coeffs, BICUBIC, fillcolor=fill)`` per image.

    ``coeffs`` ``[N, 6]`` float64 ``(a, b, c, d, e, f)``: output ``(x, y)`` samples the input at
    ``(a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f)``. A sample whose coordinate lies outside
    ``[0, W) × [0, H)`` is ``fill``; neighbours beyond the border repeat the edge.
    """
    n, c, h, w = x.shape
    xs, ys = _pixel_centres(n, h, w, x.device)
    a = coeffs.to(x.device, torch.float64).view(n, 6, 1, 1)
    xin = a[:, 0] * xs + a[:, 1] * ys + a[:, 2]
    yin = a[:, 3] * xs + a[:, 4] * ys + a[:, 5]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xin = xin - 0.5
    yin = yin - 0.5
    x0 = torch.floor(xin)
    y0 = torch.floor(yin)
    dx = (xin - x0).unsqueeze(1)
    dy = (yin - y0).unsqueeze(1)
    x0 = x0.long() - 1
    y0 = y0.long() - 1
    src = x.to(torch.float64).reshape(n, c, h * w)

    def tap(row: Tensor, col: Tensor) -> Tensor:
        idx = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).view(n, 1, -1).expand(n, c, -1)
        return src.gather(2, idx).view(n, c, h, w)

    rows = []
    for i in range(4):
        t0, t1, t2, t3 = [tap(y0 + i, x0 + j) for j in range(4)]
        rows.append(_bicubic_weights(t0, t1, t2, t3, dx))
    r0, r1, r2, r3 = rows
    v = _bicubic_weights(r0, r1, r2, r3, dy)
    out = torch.where(v <= 0, 0.0, torch.where(v >= 255, 255.0, torch.trunc(v))).to(x.dtype)
    return torch.where(inside.unsqueeze(1), out, _fill_tensor(fill, x))


def shear_x(x: Tensor, k: Tensor, fill: Fill) -> Tensor:
    """Output ``(x, y)`` samples input ``(x + k·y, y)`` (PIL ``(1, k, 0, 0, 1, 0)``, bicubic)."""
    one, zero = torch.ones_like(k), torch.zeros_like(k)
    return affine_bicubic(x, torch.stack([one, k, zero, zero, one, zero], 1), fill)


def shear_y(x: Tensor, k: Tensor, fill: Fill) -> Tensor:
    """Output ``(x, y)`` samples input ``(x, y + k·x)`` (PIL ``(1, 0, 0, k, 1, 0)``, bicubic)."""
    one, zero = torch.ones_like(k), torch.zeros_like(k)
    return affine_bicubic(x, torch.stack([one, zero, zero, k, one, zero], 1), fill)


def _coord(v: Tensor) -> Tensor:
    """PIL's ``COORD``: truncation, any negative coordinate is outside (−1)."""
    return torch.where(v < 0, -1, torch.trunc(v).long())


def _accumulated_centres(start: Tensor, count: int) -> Tensor:
    """``start + ½``, then ``+ 1`` per pixel, summed one step at a time in float64 as PIL's
    scale path accumulates its source coordinate: ``[N, count]``."""
    v = start.to(torch.float64) + 0.5
    out = [v]
    for _ in range(count - 1):
        v = v + 1.0
        out.append(v)
    return torch.stack(out, 1)


def translate(x: Tensor, tx: Tensor, ty: Tensor, fill: Fill) -> Tensor:
    """Output ``(x, y)`` samples input ``(x + tx, y + ty)``, nearest neighbour
    (PIL ``(1, 0, tx, 0, 1, ty)``)."""
    n, _, h, w = x.shape
    cols = _coord(_accumulated_centres(tx.to(x.device), w))  # [N, W]
    rows = _coord(_accumulated_centres(ty.to(x.device), h))  # [N, H]
    return gather_pixels(x, rows[:, :, None].expand(n, h, w), cols[:, None, :].expand(n, h, w), fill)


def rotation_matrix(degrees: float, width: int, height: int) -> list[float]:
    """The output→input affine matrix of ``Image.rotate(degrees)`` about the image centre
    (counter-clockwise for positive angles), computed as PIL computes it."""
    angle = -math.radians(degrees)
    m = [
        round(math.cos(angle), 15),
        round(math.sin(angle), 15),
        0.0,
        round(-math.sin(angle), 15),
        round(math.cos(angle), 15),
        0.0,
    ]
    cx, cy = width / 2, height / 2
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy
    return m


def _fix16(v: float) -> int:
    """PIL's 16.16 fixed point: ``FLOOR(v·65536 + ½)``."""
    return math.floor(v * 65536.0 + 0.5)


def rotate(x: Tensor, degrees: Sequence[float], fill: Fill) -> Tensor:
    """``Image.rotate(degrees[n])`` per image: nearest neighbour in PIL's 16.16 fixed point,
    no expansion, ``fill`` where the rotated image has no pixel. One angle per image (for
    multi-frame samples fold the frames into channels)."""
    n, _, h, w = x.shape
    if len(degrees) != n:
        raise ValueError(f"{len(degrees)} angles for {n} images")
    fixed = []
    for deg in degrees:
        a = rotation_matrix(float(deg), w, h)
        fixed.append(
            [
                _fix16(a[0]),
                _fix16(a[1]),
                _fix16(a[2] + a[1] * 0.5 + a[0] * 0.5),
                _fix16(a[3]),
                _fix16(a[4]),
                _fix16(a[5] + a[4] * 0.5 + a[3] * 0.5),
            ]
        )
    f = torch.tensor(fixed, dtype=torch.int64, device=x.device).view(n, 6, 1, 1)
    yi = torch.arange(h, device=x.device).view(1, h, 1)
    xi = torch.arange(w, device=x.device).view(1, 1, w)
    cols = (f[:, 2] + xi * f[:, 0] + yi * f[:, 1]) >> 16
    rows = (f[:, 5] + xi * f[:, 3] + yi * f[:, 4]) >> 16
    return gather_pixels(x, rows, cols, fill)


# --------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------


def grayscale(x: Tensor) -> Tensor:
    """PIL's ``convert("L")`` of RGB images: ``[N, 1, H, W]`` uint8."""
    v = x.to(torch.int32)
    luma = (v[:, 0] * 19595 + v[:, 1] * 38470 + v[:, 2] * 7471 + 0x8000) >> 16
    return luma.unsqueeze(1).to(torch.uint8)


def blend(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """``Image.blend(degenerate, image, factor[n])``: ``trunc(in1 + f·(in2 − in1))`` in float32,
    clipped to 0..255 (the factor is a C float, as in PIL)."""
    f = factor.to(image.device, torch.float32).view(-1, 1, 1, 1)
    in1 = degenerate.to(torch.float32)
    diff = (image.to(torch.int32) - degenerate.to(torch.int32)).to(torch.float32)
    v = in1 + f * diff
    return v.clamp_(0, 255).trunc_().to(torch.uint8)


def color(x: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Color(img).enhance(f)``: blend with the image's grayscale."""
    return blend(grayscale(x).expand_as(x), x, factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Contrast(img).enhance(f)``: blend with the rounded mean of the grayscale."""
    gray = grayscale(x).to(torch.int64)
    mean = gray.flatten(1).sum(1).to(torch.float64) / gray[0].numel()
    level = torch.floor(mean + 0.5).to(torch.uint8).view(-1, 1, 1, 1)
    return blend(level.expand_as(x), x, factor)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Brightness(img).enhance(f)``: blend with black."""
    return blend(torch.zeros_like(x), x, factor)


def smooth(x: Tensor) -> Tensor:
    """``img.filter(ImageFilter.SMOOTH)``: the 3×3 kernel ``[[1,1,1],[1,5,1],[1,1,1]]/13`` in
    float32 with PIL's rounding (+½, truncate); the border pixels are copied unchanged."""
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        return x.clone()
    k_side = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(13.0, dtype=torch.float32)
    k_mid = torch.tensor(5.0, dtype=torch.float32) / torch.tensor(13.0, dtype=torch.float32)
    k_side, k_mid = k_side.to(x.device), k_mid.to(x.device)
    v = x.to(torch.float32)

    def row(r: slice, centre: Tensor) -> Tensor:
        p = v[:, :, r]
        return p[..., :-2] * k_side + p[..., 1:-1] * centre + p[..., 2:] * k_side

    acc = torch.full((n, c, h - 2, w - 2), 0.5, dtype=torch.float32, device=x.device)
    acc = acc + row(slice(2, h), k_side)  # PIL adds the row below first, then the row, then above
    acc = acc + row(slice(1, h - 1), k_mid)
    acc = acc + row(slice(0, h - 2), k_side)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = acc.clamp_(0, 255).trunc_().to(torch.uint8)
    return out


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """``ImageEnhance.Sharpness(img).enhance(f)``: blend with the smoothed image."""
    return blend(smooth(x), x, factor)


# --------------------------------------------------------------------------------------------
# Look-up tables
# --------------------------------------------------------------------------------------------


def _apply_lut(x: Tensor, lut: Tensor) -> Tensor:
    """Per image and channel: ``out = lut[n, c, x]``; ``lut`` ``[N, C, 256]``, clipped to 0..255
    as ``Image.point`` clips."""
    n, c, h, w = x.shape
    table = lut.clamp(0, 255).to(torch.uint8)
    return table.gather(2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _histograms(x: Tensor) -> Tensor:
    """Per-image, per-channel histograms ``[N, C, 256]`` (int64)."""
    n, c = x.shape[:2]
    offset = (torch.arange(n * c, device=x.device) * 256).view(n, c, 1)
    idx = x.reshape(n, c, -1).long() + offset
    return torch.bincount(idx.flatten(), minlength=n * c * 256).view(n, c, 256)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """``ImageOps.posterize(img, bits[n])``: keep the top ``bits`` bits."""
    shift = (8 - bits.to(x.device, torch.int64)).view(-1, 1, 1, 1)
    mask = (255 - ((1 << shift) - 1)).to(torch.uint8)
    return x & mask


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """``ImageOps.solarize(img, threshold[n])``: pixels ``≥ threshold`` are inverted."""
    t = threshold.to(x.device, torch.float64).view(-1, 1, 1, 1)
    return torch.where(x.to(torch.float64) < t, x, 255 - x)


def invert(x: Tensor) -> Tensor:
    """``ImageOps.invert``: ``255 − x``."""
    return 255 - x


def autocontrast(x: Tensor) -> Tensor:
    """``ImageOps.autocontrast(img)`` (cutoff 0): per channel, map [lo, hi] onto [0, 255] with
    PIL's table ``int(i·scale + offset)`` (float64); a flat channel is left unchanged."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    lo = flat.amin(2).to(torch.float64).unsqueeze(2)
    hi = flat.amax(2).to(torch.float64).unsqueeze(2)
    ramp = torch.arange(256, device=x.device, dtype=torch.float64).view(1, 1, 256)
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp_min(1)  # a true division, as Python's
    offset = -lo * scale
    lut = torch.trunc(ramp * scale + offset)
    lut = torch.where(hi > lo, lut, ramp)
    return _apply_lut(x, lut.long())


def equalize(x: Tensor) -> Tensor:
    """``ImageOps.equalize(img)``: per channel, ``step = (count − count of the top value) // 255``
    and ``lut[i] = (step // 2 + Σ_{j<i} h[j]) // step``; identity when a channel has one value or
    ``step`` is 0."""
    hist = _histograms(x)
    nonzero = hist > 0
    top = 255 - nonzero.flip(2).to(torch.int64).argmax(2, keepdim=True)  # highest present value
    step = (hist.sum(2, keepdim=True) - hist.gather(2, top)) // 255
    below = torch.cumsum(hist, 2) - hist  # Σ_{j<i} h[j]
    lut = (step // 2 + below) // step.clamp_min(1)
    ramp = torch.arange(256, device=x.device).view(1, 1, 256)
    usable = (nonzero.sum(2, keepdim=True) > 1) & (step > 0)
    return _apply_lut(x, torch.where(usable, lut, ramp))


__all__ = [
    "affine_bicubic",
    "autocontrast",
    "blend",
    "brightness",
    "color",
    "contrast",
    "equalize",
    "gather_pixels",
    "grayscale",
    "invert",
    "posterize",
    "rotate",
    "rotation_matrix",
    "sharpness",
    "shear_x",
    "shear_y",
    "smooth",
    "solarize",
    "translate",
]
