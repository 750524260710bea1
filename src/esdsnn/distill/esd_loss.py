"""Reliability-decoupled self-distillation loss (SPEC §4).

Heads ``z_1..z_L`` (branches first, main last). The teacher of a sample is built from the heads
that predict its label (``reliable``), from all heads (``all``: plain self-distillation) or from
the main head (``main``). KD terms are averaged over the samples that have a teacher; a batch with
none contributes exactly 0.

Under data parallelism each process sees a slice of the batch and DDP averages the gradients of the
slices. Cross-entropy terms are plain means, so that average is the global mean; a mean over the
*reliable* samples is not (each slice has its own count). ``reduce_counts`` fixes this: it turns the
local counts into the global count divided by the number of processes (see
``esdsnn.train.distributed.wrap_ddp``), and the averaged gradient is then exactly that of one
process on the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..fields import check_choices, option

TeacherMode = Literal["reliable", "all", "main"]
TeacherSpace = Literal["logits", "probs"]
UnreliableMode = Literal["drop", "uniform", "entropy"]
#: Maps this process's counts to the denominators of the KD means (global count / processes).
CountReducer = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class DistillConfig:
    """Weights and choices of the ESD loss: ``CE_main + alpha·Σ CE_branch + beta·Σ KD``."""

    alpha: float = option(1.0, "weight of the branch cross-entropy losses")
    beta: float = option(0.3, "weight of the distillation losses")
    kd_tau: float = option(
        3.0,
        "temperature of the self-distillation (ESD/SD) softmax; was --tau, "
        "renamed because SpikingJelly users read tau as the membrane time constant",
    )
    teacher: TeacherMode = option("reliable", "teacher: reliable (ESD), all (plain self-distillation), main")
    teacher_space: TeacherSpace = option("logits", "average the teacher in logits or probs")
    unreliable: UnreliableMode = option("drop", "samples without a reliable teacher: drop, uniform, entropy")
    eta: float = option(0.1, "weight of the unreliable-sample term (uniform/entropy)")
    stages: Optional[tuple[str, ...]] = option(
        None,
        "submodules whose outputs feed the ESD branches, by dotted name (e.g. layer1,layer2.1); "
        "default: a built-in model's stages",
    )

    def __post_init__(self) -> None:
        if isinstance(self.stages, str):
            object.__setattr__(self, "stages", tuple(n.strip() for n in self.stages.split(",") if n.strip()))
        elif self.stages is not None:
            object.__setattr__(self, "stages", tuple(str(n) for n in self.stages))
        check_choices(self)
        checks = [
            (self.kd_tau > 0, f"kd_tau must be > 0, got {self.kd_tau}"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.beta >= 0, f"beta must be >= 0, got {self.beta}"),
            (self.eta >= 0, f"eta must be >= 0, got {self.eta}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Teacher:
    """Per-sample teacher distribution at temperature kd_tau, and which samples have one."""

    probs: Tensor  # [B, K], no gradient
    has_teacher: Tensor  # [B] bool
    counts: Tensor  # [2] float: denominators of the means over samples with / without a teacher


@torch.no_grad()
def build_teacher(
    heads: Sequence[Tensor], labels: Tensor, cfg: DistillConfig, reduce_counts: Optional[CountReducer] = None
) -> Teacher:
    stacked = torch.stack([z.detach().float() for z in heads])  # [L, B, K]
    if cfg.teacher == "main":
        weights = torch.zeros(stacked.shape[:2], device=stacked.device)
        weights[-1] = 1.0
    elif cfg.teacher == "all":
        weights = torch.ones(stacked.shape[:2], device=stacked.device)
    else:
        weights = (stacked.argmax(-1) == labels.unsqueeze(0)).float()  # [L, B]
    count = weights.sum(0)  # [B]
    if cfg.teacher_space == "logits":
        mean_logits = (stacked * weights.unsqueeze(-1)).sum(0) / (count.unsqueeze(-1) + 1e-8)
        probs = F.softmax(mean_logits / cfg.kd_tau, dim=-1)
    else:
        head_probs = F.softmax(stacked / cfg.kd_tau, dim=-1)
        probs = (head_probs * weights.unsqueeze(-1)).sum(0) / (count.unsqueeze(-1) + 1e-8)
    has_teacher = count > 0
    counts = torch.stack([has_teacher.sum(), (~has_teacher).sum()]).float()
    if reduce_counts is not None:
        counts = reduce_counts(counts)
    return Teacher(probs=probs, has_teacher=has_teacher, counts=counts)


def _masked_mean(values: Tensor, mask: Tensor, n: Tensor) -> Tensor:
    """``Σ values·mask / n``; exactly 0 (with gradient path) when no sample counts (n = 0)."""
    return (values * mask).sum() / torch.where(n > 0, n, torch.ones_like(n))


def distillation_terms(head: Tensor, teacher: Teacher, cfg: DistillConfig) -> Tensor:
    """``KD_l``: τ²·KL(teacher ‖ head) over samples with a teacher, plus η·R_l over those without."""
    log_p = F.log_softmax(head.float() / cfg.kd_tau, dim=-1)
    t = teacher.probs
    kl = (t * (torch.log(t.clamp_min(1e-12)) - log_p)).sum(-1)  # [B]
    has = teacher.has_teacher.float()
    loss = cfg.kd_tau**2 * _masked_mean(kl, has, teacher.counts[0])
    if cfg.unreliable != "drop" and cfg.eta > 0:
        no_teacher = 1.0 - has
        k = head.shape[-1]
        if cfg.unreliable == "uniform":  # KL(uniform ‖ p) = -log K - mean_c log p_c
            reg = -torch.log(torch.tensor(float(k), device=head.device)) - log_p.mean(-1)
        else:  # negative entropy: pushes unreliable predictions towards uncertainty
            reg = (log_p.exp() * log_p).sum(-1)
        loss = loss + cfg.eta * _masked_mean(reg, no_teacher, teacher.counts[1])
    return loss


def esd_loss(
    heads: Sequence[Tensor], labels: Tensor, cfg: DistillConfig, reduce_counts: Optional[CountReducer] = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total ESD loss (before the pass's loss scale) and its detached parts.

    ``heads``: branch logits first, the main head last. ``reduce_counts``: see the module notes.
    """
    *branches, main = heads
    ce_main = F.cross_entropy(main, labels)
    ce_branches = sum((F.cross_entropy(z, labels) for z in branches), main.new_zeros(()))
    teacher = build_teacher(heads, labels, cfg, reduce_counts)
    kd = sum((distillation_terms(z, teacher, cfg) for z in heads), main.new_zeros(()))
    total = ce_main + cfg.alpha * ce_branches + cfg.beta * kd
    parts = {
        "ce_main": ce_main.detach(),
        "ce_branches": ce_branches.detach(),
        "kd": kd.detach(),
        "teacher_frac": teacher.has_teacher.float().mean(),
    }
    return total, parts
