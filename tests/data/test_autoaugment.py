"""The official CIFAR-10 AutoAugment policy, batched, against PIL itself.

The reference for every operation is PIL called as the official ``CIFAR10Policy`` calls it
(``Image.transform`` / ``rotate`` / ``ImageEnhance`` / ``ImageOps`` with the parameters of SPEC §7).
Tolerance: none. The batched ops reproduce PIL's arithmetic (its 16.16 fixed point for rotations,
its double-precision coordinates and a = −1 cubic for shears, float32 blends with truncation), so
on the same image and draw the pixels are identical; a mismatch of even one level is a bug.
"""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from esdsnn.data import autoaugment as AA
from esdsnn.data import pil_ops
from esdsnn.data.augment import CIFAR10_MEAN, CIFAR10_STD, AugmentConfig, CifarAugment, Normalize

torch.set_num_threads(1)
FILL = (128, 128, 128)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def scene_images(size=32):
    """Real-looking test images: colour gradients, hard edges, a soft disc, smooth 'natural'
    texture, noise, a low-contrast image, a flat one and a two-level one."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = size - 1
    images = [
        np.stack([xx / s * 255, yy / s * 255, (1 - xx / s) * 200 + 30], -1),
        np.where(((xx // 8 + yy // 8) % 2)[..., None] == 1, [230, 40, 40], [20, 60, 210]),
        np.stack([np.clip(255 - np.hypot(xx - 15.5, yy - 12) * 11, 0, 255)] * 2 + [np.full_like(xx, 90.0)], -1),
        np.kron(rng.uniform(0, 255, (4, 4, 3)), np.ones((8, 8, 1)))[:size, :size],
        rng.integers(0, 256, (size, size, 3)),
        100 + 40 * np.stack([np.sin(xx / 5), np.cos(yy / 7), np.sin((xx + yy) / 9)], -1) ** 2,
        np.full((size, size, 3), 77.0),
        np.where((xx > 10)[..., None], [200, 200, 10], [5, 5, 250]),
    ]
    smooth = torch.nn.functional.interpolate(
        torch.tensor(rng.uniform(0, 255, (1, 3, 6, 6))), size=(size, size), mode="bicubic", align_corners=False
    )
    images.append(smooth[0].permute(1, 2, 0).clamp(0, 255).numpy())
    return np.stack([np.asarray(im).round().clip(0, 255).astype(np.uint8) for im in images])


def to_tensor(arr):
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def to_array(x):
    return x.permute(0, 2, 3, 1).numpy()


def pil_op(img, name, magnitude, sign):
    """One operation as the official CIFAR10Policy runs it on a PIL image (SPEC §7 table),
    with the random sign given."""
    w, h = img.size
    if name == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, magnitude * sign, 0, 0, 1, 0), Image.BICUBIC, fillcolor=FILL)
    if name == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, magnitude * sign, 1, 0), Image.BICUBIC, fillcolor=FILL)
    if name == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, magnitude * w * sign, 0, 1, 0), fillcolor=FILL)
    if name == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, magnitude * h * sign), fillcolor=FILL)
    if name == "rotate":  # gray where the rotated image has no pixel
        rot = img.convert("RGBA").rotate(magnitude)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert("RGB")
    enhancers = {
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "brightness": ImageEnhance.Brightness,
        "sharpness": ImageEnhance.Sharpness,
    }
    if name in enhancers:
        return enhancers[name](img).enhance(1 + magnitude * sign)
    if name == "posterize":
        return ImageOps.posterize(img, int(magnitude))
    if name == "solarize":
        return ImageOps.solarize(img, magnitude)
    return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize, "invert": ImageOps.invert}[name](img)


def pil_batch(arr, name, magnitude, sign):
    return np.stack([np.asarray(pil_op(Image.fromarray(a), name, magnitude, sign)) for a in arr])


@pytest.mark.parametrize("name", AA.OP_NAMES)
def test_each_operation_equals_pil_at_every_bin_and_sign(name):
    arr = scene_images()
    x = to_tensor(arr)
    n = len(arr)
    for b in range(10):
        magnitude = AA.RANGES[name][b]
        for sign in (-1, 1):
            ours = AA.OPS[name](
                x,
                torch.full((n,), float(magnitude), dtype=torch.float64),
                torch.full((n,), float(sign), dtype=torch.float64),
            )
            assert ours.dtype == torch.uint8 and ours.shape == x.shape
            ref = pil_batch(arr, name, magnitude, sign)
            diff = np.abs(to_array(ours).astype(int) - ref.astype(int))
            assert diff.max() == 0, f"{name} bin {b} sign {sign}: {np.count_nonzero(diff)} pixels differ"


def test_operations_at_other_sizes_and_angles_equal_pil():
    """Non-square images and angles beyond the policy's: the sampling is PIL's, not the
    policy's special case."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (3, 20, 28, 3)).astype(np.uint8)
    x = to_tensor(arr)
    for deg in (-45.0, 12.5, 170.0):
        ref = np.stack([np.asarray(pil_op(Image.fromarray(a), "rotate", deg, 1)) for a in arr])
        assert np.array_equal(to_array(pil_ops.rotate(x, [deg] * 3, FILL)), ref), deg
    k = torch.full((3,), -0.45, dtype=torch.float64)
    assert np.array_equal(to_array(pil_ops.shear_x(x, k, FILL)), pil_batch(arr, "shearX", 0.45, -1))
    assert np.array_equal(to_array(pil_ops.shear_y(x, k, FILL)), pil_batch(arr, "shearY", 0.45, -1))


def test_parameters_per_image_in_one_call_equal_pil():
    arr = scene_images()
    x = to_tensor(arr)
    n = len(arr)
    factors = torch.linspace(0.1, 1.9, n, dtype=torch.float64)
    ours = pil_ops.contrast(x, factors)
    ref = np.stack(
        [np.asarray(ImageEnhance.Contrast(Image.fromarray(a)).enhance(float(f))) for a, f in zip(arr, factors)]
    )
    assert np.array_equal(to_array(ours), ref)
    shifts = torch.linspace(-14.5, 14.5, n, dtype=torch.float64)
    ours = pil_ops.translate(x, shifts, -shifts, FILL)
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray(a).transform((32, 32), Image.AFFINE, (1, 0, float(t), 0, 1, -float(t)), fillcolor=FILL)
            )
            for a, t in zip(arr, shifts)
        ]
    )
    assert np.array_equal(to_array(ours), ref)


def test_policy_table_and_strengths_are_the_official_ones():
    """Spot checks against the AutoAugment paper's CIFAR-10 policy as the official code lists it."""
    policy = AA.CIFAR10_POLICY
    assert len(policy) == 25 and all(len(row) == 2 for row in policy)
    assert policy[0] == (("invert", 0.1, 7), ("contrast", 0.2, 6))
    assert policy[1] == (("rotate", 0.7, 2), ("translateX", 0.3, 9))
    assert policy[14] == (("solarize", 0.5, 2), ("invert", 0.0, 3))
    assert policy[24] == (("translateY", 0.7, 9), ("autocontrast", 0.9, 1))
    counts = {}
    for row in policy:
        for op, p, b in row:
            counts[op] = counts.get(op, 0) + 1
            assert 0.0 <= p <= 1.0 and 0 <= b <= 9
    assert counts["equalize"] == 9 and counts["autocontrast"] == 7 and "shearX" not in counts
    assert AA.RANGES["posterize"].tolist() == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert AA.RANGES["solarize"][0] == 256 and AA.RANGES["solarize"][9] == 0
    assert math.isclose(AA.RANGES["shearY"][8], 0.3 * 8 / 9)
    assert math.isclose(AA.RANGES["translateY"][9] * 32, 150 / 331 * 32)  # 14.5 px at bin 9
    assert math.isclose(AA.RANGES["rotate"][2], 30 * 2 / 9)
    assert math.isclose(AA.RANGES["brightness"][9], 0.9)  # factor 1 ± 0.9, multiplicative


# The CIFAR-10 policy of the official ESD code (arXiv 2510.06254), written out here by hand from
# its source as (p1, op1, bin1, p2, op2, bin2), the order of its ``SubPolicy(...)`` calls. Source:
# github.com/Intelli-Chip-Lab/enhanced-self-distillation-framework-for-snn at commit d44e876. Its
# CIFAR loader (``util/data.py``) imports ``CIFAR10Policy`` from ``util/image_augment.py``, which the
# searchable index does not hold; the same repository's ``experiment/dvs/process.py`` defines the
# ``CIFAR10Policy`` read here (the code the paper ran). Row 16's second probability is 0.8 there,
# 0.6 in other copies of the DeepVoltaire policy.
OFFICIAL_CIFAR10_POLICY = """
0.1 invert 7        0.2 contrast 6
0.7 rotate 2        0.3 translateX 9
0.8 sharpness 1     0.9 sharpness 3
0.5 shearY 8        0.7 translateY 9
0.5 autocontrast 8  0.9 equalize 2
0.2 shearY 7        0.3 posterize 7
0.4 color 3         0.6 brightness 7
0.3 sharpness 9     0.7 brightness 9
0.6 equalize 5      0.5 equalize 1
0.6 contrast 7      0.6 sharpness 5
0.7 color 7         0.5 translateX 8
0.3 equalize 7      0.4 autocontrast 8
0.4 translateY 3    0.2 sharpness 6
0.9 brightness 6    0.2 color 8
0.5 solarize 2      0.0 invert 3
0.2 equalize 0      0.6 autocontrast 0
0.2 equalize 8      0.8 equalize 4
0.9 color 9         0.6 equalize 6
0.8 autocontrast 4  0.2 solarize 8
0.1 brightness 3    0.7 color 0
0.4 solarize 5      0.9 autocontrast 3
0.9 translateY 9    0.7 translateY 9
0.9 autocontrast 2  0.8 solarize 3
0.8 equalize 8      0.1 invert 3
0.7 translateY 9    0.9 autocontrast 1
"""


def test_policy_table_equals_the_official_code_entry_by_entry():
    rows = [line.split() for line in OFFICIAL_CIFAR10_POLICY.strip().splitlines()]
    official = [((op1, float(p1), int(b1)), (op2, float(p2), int(b2))) for p1, op1, b1, p2, op2, b2 in rows]
    assert len(official) == 25
    for k, (ours, theirs) in enumerate(zip(AA.CIFAR10_POLICY, official)):
        assert ours == theirs, f"sub-policy {k}: {ours} != official {theirs}"
    assert len(AA.CIFAR10_POLICY) == 25
    # the strengths per bin, as the official SubPolicy's ``ranges`` define them
    official_ranges = {
        "shearX": np.linspace(0, 0.3, 10),
        "shearY": np.linspace(0, 0.3, 10),
        "translateX": np.linspace(0, 150 / 331, 10),
        "translateY": np.linspace(0, 150 / 331, 10),
        "rotate": np.linspace(0, 30, 10),
        "color": np.linspace(0.0, 0.9, 10),
        "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
        "solarize": np.linspace(256, 0, 10),
        "contrast": np.linspace(0.0, 0.9, 10),
        "sharpness": np.linspace(0.0, 0.9, 10),
        "brightness": np.linspace(0.0, 0.9, 10),
        "autocontrast": [0] * 10,
        "equalize": [0] * 10,
        "invert": [0] * 10,
    }
    assert set(AA.RANGES) == set(official_ranges)
    for op, values in official_ranges.items():
        assert np.array_equal(AA.RANGES[op], np.asarray(values)), op


def pil_policy(arr, plan):
    """The official CIFAR10Policy on each image, with the plan's draws."""
    out = []
    for a, k, applied, sign in zip(arr, plan.subpolicy.tolist(), plan.applied.tolist(), plan.sign.tolist()):
        img = Image.fromarray(a)
        for stage, (op, _, b) in enumerate(AA.CIFAR10_POLICY[k]):
            if applied[stage]:
                img = pil_op(img, op, AA.RANGES[op][b], int(sign[stage]))
        out.append(np.asarray(img))
    return np.stack(out)


def test_whole_policy_equals_pil_on_the_same_draws():
    base = scene_images()
    arr = np.concatenate([base] * 30)  # 270 images: every sub-policy many times
    plan = AA.draw_plan(len(arr), gen(7))
    assert len(torch.unique(plan.subpolicy)) == 25
    ours = AA.apply_plan(to_tensor(arr), plan)
    assert np.array_equal(to_array(ours), pil_policy(arr, plan))


def test_draws_are_uniform_and_follow_the_probabilities():
    n = 50_000
    plan = AA.draw_plan(n, gen(3))
    counts = torch.bincount(plan.subpolicy, minlength=25).double()
    chi2 = float(((counts - n / 25) ** 2 / (n / 25)).sum())
    assert chi2 < 60  # 24 degrees of freedom: p < 1e-4 beyond 60
    for stage in range(2):
        s = plan.sign[:, stage]
        assert set(s.unique().tolist()) == {-1.0, 1.0}
        assert abs(float(s.mean())) < 5 / math.sqrt(n)
    for k, row in enumerate(AA.CIFAR10_POLICY):
        mine = plan.subpolicy == k
        m = int(mine.sum())
        for stage, (_, p, _) in enumerate(row):
            rate = float(plan.applied[mine, stage].double().mean())
            assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / m) + 1e-12, (k, stage)
    # within a sub-policy the two gates are independent: P(both) = p1·p2
    mine = plan.subpolicy == 9  # (contrast 0.6, sharpness 0.6)
    m = int(mine.sum())
    both = float((plan.applied[mine, 0] & plan.applied[mine, 1]).double().mean())
    assert abs(both - 0.36) <= 5 * math.sqrt(0.36 * 0.64 / m)


def test_a_fixed_seed_reproduces_a_batch_and_leaves_global_rng_alone():
    x = to_tensor(np.concatenate([scene_images()] * 4))
    state = torch.get_rng_state()
    a, b, c = AA.auto_augment(x, gen(1)), AA.auto_augment(x, gen(1)), AA.auto_augment(x, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    assert len({tuple(im.flatten().tolist()) for im in a}) > len(a) // 2  # per-image draws


def test_autoaugment_refuses_float_images():
    with pytest.raises(TypeError, match="uint8"):
        AA.auto_augment(torch.rand(2, 3, 8, 8), gen())


def test_cifar_augment_runs_autoaugment_on_uint8_before_normalising():
    x = to_tensor(np.concatenate([scene_images()] * 3))
    only_aa = AugmentConfig(crop=False, flip=False, autoaugment=True, cutout=False)
    out = CifarAugment(CIFAR10_MEAN, CIFAR10_STD, only_aa)(x, gen(5))
    expect = Normalize(CIFAR10_MEAN, CIFAR10_STD)(AA.auto_augment(x, gen(5)))
    assert torch.equal(out, expect)


@pytest.mark.cuda
def test_policy_on_cuda_equals_cpu():
    x = to_tensor(np.concatenate([scene_images()] * 20))
    plan = AA.draw_plan(len(x), gen(11))
    assert torch.equal(AA.apply_plan(x.cuda(), plan).cpu(), AA.apply_plan(x, plan))
