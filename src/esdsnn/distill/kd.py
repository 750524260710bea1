"""ANN-teacher distillation terms of CKDSNN (SPEC §5): SAMD on attention maps, NLD on logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fields import check_choices, option


@dataclass(frozen=True)
class KDConfig:
    """Weights and temperatures of ANN-teacher distillation: ``CE + w_samd·SAMD + w_nld·NLD``."""

    samd_weight: float = option(1.0, "kd: weight of the spatial attention map distillation (SAMD)")
    nld_weight: float = option(1.0, "kd: weight of the noisy logit distillation (NLD)")
    samd_temperature: float = option(2.0, "kd: softmax temperature of the attention maps")
    nld_tau: float = option(2.0, "kd: temperature of the logit distillation")
    nld_mix: float = option(0.9, "kd: weight w of the student's own probabilities in NLD")
    student_pass: Literal["bptt", "ratebp"] = option("bptt", "kd: how the student trains, bptt or ratebp")

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("samd_weight", "nld_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("samd_temperature", "nld_tau"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.nld_mix <= 1:
            raise ValueError(f"nld_mix must be in [0, 1], got {self.nld_mix}")


def minmax_per_sample(maps: Tensor) -> Tensor:
    """Scale each sample's map ``[B, H, W]`` to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def student_attention(last_stage_rates: Tensor, T: int) -> Tensor:
    """Sum over channels and time of the last stage's spikes: rates ``[B, C, H, W]`` × T → ``[B, H, W]``."""
    return last_stage_rates.sum(1) * T


def classifier_weight(head: nn.Module | Sequence[nn.Linear]) -> Tensor:
    """Class-by-channel weights of a classifier: its linear layer, or the product of several
    (ResNet-19's two); ``head`` is a module holding them or the linear layers in order."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if isinstance(head, nn.Module) else list(head)
    if not linears:
        raise ValueError("the teacher's head has no linear layer to build a class activation map from")
    weight = linears[-1].weight
    for layer in reversed(linears[:-1]):
        weight = weight @ layer.weight  # nonlinearity between them ignored: an approximation
    return weight


def class_activation_map(features: Tensor, weight: Tensor, classes: Tensor) -> Tensor:
    """CAM of the given class per sample: ``ReLU(Σ_c w[class, c]·F_c)`` → ``[B, H, W]``.

    A classifier on a flattened ``C×s×s`` pooled map (VGG-SNN) has one weight per channel and
    position: the map is then pooled to ``s×s`` and weighted position by position.
    """
    rows = weight[classes]  # [B, in_features]
    channels = features.shape[1]
    if rows.shape[1] == channels:
        return F.relu(torch.einsum("bchw,bc->bhw", features, rows))
    side = math.isqrt(rows.shape[1] // channels)
    if side * side * channels != rows.shape[1]:
        raise ValueError(f"cannot map a classifier with {rows.shape[1]} inputs onto {channels} channels")
    pooled = F.adaptive_avg_pool2d(features, side)
    return F.relu((pooled * rows.view(-1, channels, side, side)).sum(1))


def samd_loss(student_map: Tensor, teacher_map: Tensor, temperature: float = 2.0) -> Tensor:
    """``KL(teacher ‖ student)`` of min-max-normalised maps turned into distributions over H·W."""
    if teacher_map.shape[-2:] != student_map.shape[-2:]:
        teacher_map = F.interpolate(
            teacher_map.unsqueeze(1), size=student_map.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    s = minmax_per_sample(student_map).flatten(1) / temperature
    t = minmax_per_sample(teacher_map).flatten(1) / temperature
    return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True)


def nld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    weight: float = 0.9,
    tau: float = 2.0,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Noisy logit distillation: the student's softmax mixed with that of noise logits.

    ``z̃ = μ + σ·ε`` per sample (μ, σ of the student's logits, detached; ε ~ N(0, I)),
    ``p_s = w·softmax(z_s/τ) + (1−w)·softmax(z̃/τ)``, loss ``τ²·KL(softmax(z_t/τ) ‖ p_s)``.
    """
    z = student_logits.float()
    mu = z.detach().mean(-1, keepdim=True)
    sigma = z.detach().std(-1, keepdim=True)
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    noise_logits = mu + sigma * eps
    p_s = weight * F.softmax(z / tau, -1) + (1.0 - weight) * F.softmax(noise_logits / tau, -1)
    p_t = F.softmax(teacher_logits.float() / tau, -1)
    return tau**2 * (p_t * (torch.log(p_t.clamp_min(1e-12)) - torch.log(p_s.clamp_min(1e-12)))).sum(-1).mean()
