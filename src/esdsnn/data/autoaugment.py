"""AutoAugment with the CIFAR-10 policy as the official ESD code runs it, batched on the device.

The official code augments CIFAR with ``CIFAR10Policy``, its copy of the widely used
implementation of the AutoAugment paper's CIFAR-10 policy (DeepVoltaire/AutoAugment; copies differ
on sub-policy 16, where the official one has p = 0.8), on PIL images. This module runs
the same policy on uint8 batches ``[N, 3, H, W]`` with the same semantics (SPEC §7):

- per image, one of the 25 sub-policies uniformly; each of its two operations runs with its own
  probability; shears, translations and the enhancement factors take a random sign per
  application; rotations are counter-clockwise, without a sign;
- operation strengths at bin ``m`` come from the official ranges (``np.linspace`` tables);
- geometric operations fill with gray 128; images stay uint8 between operations, with PIL's
  arithmetic (:mod:`esdsnn.data.pil_ops`, tested op by op against PIL itself).

The random draws are made first, on the CPU from the caller's ``torch.Generator``
(:func:`draw_plan`), then applied (:func:`apply_plan`), so a fixed seed reproduces a batch on any
device, and a plan can be replayed through PIL for testing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from esdsnn.data import pil_ops

FILL = (128, 128, 128)

# (operation, probability, magnitude bin) pairs: the CIFAR-10 policy as the official ESD code lists
# it, in its order. Copies of the DeepVoltaire policy differ on sub-policy 16; the paper ran this one.
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translateX", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shearY", 0.5, 8), ("translateY", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shearY", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translateX", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translateY", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.8, 4)),  # 0.8 in the official code (0.6 in other copies)
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translateY", 0.9, 9), ("translateY", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translateY", 0.7, 9), ("autocontrast", 0.9, 1)),
)

# Strength of each operation at bins 0..9 (the official ranges). Translations are a fraction of
# the image size; posterize keeps round(linspace(8, 4)) bits; solarize inverts pixels >= the value.
RANGES: dict[str, np.ndarray] = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(np.int64),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10),
    "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
    "autocontrast": np.zeros(10),
    "equalize": np.zeros(10),
    "invert": np.zeros(10),
}

# op(x, magnitude [n] float64, sign [n] float64 of ±1) -> x; the sign is ignored where the
# official code draws none.
Op = Callable[[Tensor, Tensor, Tensor], Tensor]


def _factor(magnitude: Tensor, sign: Tensor) -> Tensor:
    return 1 + magnitude * sign


def _translate_x(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    return pil_ops.translate(x, m * x.shape[-1] * s, torch.zeros_like(m), FILL)


def _translate_y(x: Tensor, m: Tensor, s: Tensor) -> Tensor:
    return pil_ops.translate(x, torch.zeros_like(m), m * x.shape[-2] * s, FILL)


OPS: dict[str, Op] = {
    "shearX": lambda x, m, s: pil_ops.shear_x(x, m * s, FILL),
    "shearY": lambda x, m, s: pil_ops.shear_y(x, m * s, FILL),
    "translateX": _translate_x,
    "translateY": _translate_y,
    "rotate": lambda x, m, s: pil_ops.rotate(x, m.tolist(), FILL),
    "color": lambda x, m, s: pil_ops.color(x, _factor(m, s)),
    "posterize": lambda x, m, s: pil_ops.posterize(x, m.round().long()),
    "solarize": lambda x, m, s: pil_ops.solarize(x, m),
    "contrast": lambda x, m, s: pil_ops.contrast(x, _factor(m, s)),
    "sharpness": lambda x, m, s: pil_ops.sharpness(x, _factor(m, s)),
    "brightness": lambda x, m, s: pil_ops.brightness(x, _factor(m, s)),
    "autocontrast": lambda x, m, s: pil_ops.autocontrast(x),
    "equalize": lambda x, m, s: pil_ops.equalize(x),
    "invert": lambda x, m, s: pil_ops.invert(x),
}
OP_NAMES = tuple(OPS)

# The policy as tensors: op index, probability and magnitude per (sub-policy, stage).
_OP_INDEX = torch.tensor([[OP_NAMES.index(op) for op, _, _ in row] for row in CIFAR10_POLICY])
_PROB = torch.tensor([[p for _, p, _ in row] for row in CIFAR10_POLICY], dtype=torch.float64)
_MAGNITUDE = torch.tensor([[float(RANGES[op][b]) for op, _, b in row] for row in CIFAR10_POLICY], dtype=torch.float64)


@dataclass
class Plan:
    """The random draws of one batch: per image, its sub-policy, which of its two operations
    run, and the sign of each application (all on the CPU)."""

    subpolicy: Tensor  # [N] int64 in 0..24
    applied: Tensor  # [N, 2] bool: random() < p of each stage
    sign: Tensor  # [N, 2] float64, ±1

    def __len__(self) -> int:
        return len(self.subpolicy)


def draw_plan(n: int, gen: torch.Generator) -> Plan:
    """Draw sub-policies, operation gates and signs for ``n`` images from ``gen``."""
    subpolicy = torch.randint(len(CIFAR10_POLICY), (n,), generator=gen)
    gate = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    sign = torch.randint(0, 2, (n, 2), generator=gen).to(torch.float64) * 2 - 1
    return Plan(subpolicy=subpolicy, applied=gate < _PROB[subpolicy], sign=sign)


def apply_plan(x: Tensor, plan: Plan) -> Tensor:
    """Run each image's sub-policy on uint8 images ``[N, 3, H, W]``; the images that run the
    same operation at a stage go through it together."""
    if x.dtype != torch.uint8:
        raise TypeError(f"AutoAugment works on uint8 images (PIL semantics), got {x.dtype}")
    if len(plan) != x.shape[0]:
        raise ValueError(f"a plan for {len(plan)} images applied to {x.shape[0]}")
    out = x.clone()
    for stage in range(2):
        op_index = _OP_INDEX[plan.subpolicy, stage]
        magnitude = _MAGNITUDE[plan.subpolicy, stage]
        for k in torch.unique(op_index[plan.applied[:, stage]]).tolist():
            rows = ((op_index == k) & plan.applied[:, stage]).nonzero().flatten()
            idx = rows.to(x.device)
            m = magnitude[rows].to(x.device)
            s = plan.sign[rows, stage].to(x.device)
            out[idx] = OPS[OP_NAMES[k]](out[idx], m, s)
    return out


def auto_augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """AutoAugment (the official CIFAR-10 policy) on uint8 images ``[N, 3, H, W]``, one
    sub-policy drawn per image from ``gen``."""
    return apply_plan(x, draw_plan(x.shape[0], gen))


__all__ = [
    "CIFAR10_POLICY",
    "FILL",
    "OPS",
    "RANGES",
    "Plan",
    "apply_plan",
    "auto_augment",
    "draw_plan",
]
