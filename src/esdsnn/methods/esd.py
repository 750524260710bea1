"""Enhanced self-distillation: RateBP or BPTT plus branches and the reliability-decoupled loss.

``esd`` is the paper's method (RateBP), ``esd-bptt`` the same branches and loss on BPTT, and
``sd`` plain self-distillation (the teacher is the mean of all heads), the ablation of the
reliability filter.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..distill.esd_loss import DistillConfig
from .bptt import BPTT
from .ratebp import RateBP
from .registry import register_method


@register_method(
    "esd",
    description="RateBP + ESD branches, reliability-decoupled teacher",
    training_pass="RateBP",
    sections=("distill",),
    scales_loss_by_T=True,
)
def esd(model: nn.Module, T: int, *, distill: DistillConfig, **common: Any) -> RateBP:
    return RateBP(model, T, distill=distill, **common)


@register_method(
    "esd-bptt",
    description="BPTT + ESD branches, reliability-decoupled teacher",
    training_pass="BPTT",
    sections=("distill",),
)
def esd_bptt(model: nn.Module, T: int, *, distill: DistillConfig, **common: Any) -> BPTT:
    return BPTT(model, T, distill=distill, **common)


@register_method(
    "sd",
    description="RateBP + branches, plain self-distillation (teacher = all heads)",
    training_pass="RateBP",
    sections=("distill",),
    forced={"teacher": "all"},
    scales_loss_by_T=True,
    ablation_of=("esd", "reliability filter"),
)
def sd(model: nn.Module, T: int, *, distill: DistillConfig, **common: Any) -> RateBP:
    return RateBP(model, T, distill=distill, **common)
