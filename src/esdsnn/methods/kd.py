"""ANN-to-SNN distillation (CKDSNN, SPEC §5): CE + SAMD + NLD from a frozen ReLU-twin teacher."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill.kd import class_activation_map, classifier_weight, nld_loss, samd_loss, student_attention
from ..errors import ConfigError
from ..models.twin import is_relu_twin
from ..passes.context import PassState, use_pass
from ..passes.inputs import rate_input
from ..passes.ratebp import run_rate_stage, run_spike_stage
from ..passes.spike import run_bptt
from .base import MethodOutput, TrainingMethod


@dataclass(frozen=True)
class KDConfig:
    samd_weight: float = 1.0
    nld_weight: float = 1.0
    samd_temperature: float = 2.0
    nld_tau: float = 2.0
    nld_mix: float = 0.9
    student_pass: str = "bptt"  # or "ratebp"

    def __post_init__(self) -> None:
        if self.student_pass not in ("bptt", "ratebp"):
            raise ValueError(f"kd student_pass must be bptt or ratebp, got {self.student_pass!r}")
        if min(self.samd_weight, self.nld_weight) < 0 or not 0 <= self.nld_mix <= 1:
            raise ValueError("kd weights must be >= 0 and nld_mix in [0, 1]")
        if min(self.samd_temperature, self.nld_tau) <= 0:
            raise ValueError("kd temperatures must be > 0")


class ANNDistillation(TrainingMethod):
    """The SNN student learns from labels, the teacher's class activation map and noisy logits.

    The teacher is frozen, kept in eval mode, run under ``no_grad``, and deliberately not a
    submodule: it is not in ``parameters()``, the optimizer, checkpoints or DDP.
    """

    def __init__(self, model: nn.Module, T: int, *, teacher: nn.Module, kd: KDConfig = KDConfig(), **kwargs) -> None:
        self.scales_loss_by_T = kd.student_pass == "ratebp"
        super().__init__(model, T, **kwargs)
        if not is_relu_twin(teacher):
            raise ConfigError("the kd teacher must be an ANN (a run trained with --method ann)")
        if getattr(teacher, "num_classes", None) != model.num_classes:
            raise ConfigError(f"teacher has {getattr(teacher, 'num_classes', '?')} classes but the student {model.num_classes}")
        if getattr(teacher, "in_channels", None) != model.in_channels:
            raise ConfigError(f"teacher takes {getattr(teacher, 'in_channels', '?')} input channels but the student {model.in_channels}")
        self.kd = kd
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not registered on purpose

    def _apply(self, fn, *args, **kwargs):
        self.teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with use_pass(PassState("infer", 1)):
            logits, features = self.teacher.forward_intermediates(rate_input(x))
        last = features[-1]
        cam = class_activation_map(last, classifier_weight(self.teacher.head), logits.argmax(-1))
        return logits, cam

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if self.kd.student_pass == "bptt":
            return run_bptt(self.model, x, self.T, intermediates=True)
        _, trace = run_spike_stage(self.model, x, self.T)
        return run_rate_stage(self.model, x, trace, intermediates=True)

    def forward(self, x: Tensor, y: Tensor) -> MethodOutput:
        logits, features = self.training_pass(x)
        teacher_logits, teacher_map = self.teacher_outputs(x)
        ce = F.cross_entropy(logits, y)
        samd = samd_loss(student_attention(features[-1], self.T), teacher_map, self.kd.samd_temperature)
        nld = nld_loss(logits, teacher_logits, weight=self.kd.nld_mix, tau=self.kd.nld_tau)
        loss = ce + self.kd.samd_weight * samd + self.kd.nld_weight * nld
        parts = {
            "ce_main": ce.detach(), "samd": samd.detach(), "nld": nld.detach(), "loss": loss.detach(),
            "acc_main": (logits.detach().argmax(-1) == y).float().mean(),
            "acc_teacher": (teacher_logits.argmax(-1) == y).float().mean(),
        }
        values = torch.stack([v.float() for v in parts.values()]).tolist()
        return MethodOutput(loss * self.loss_scale, logits, dict(zip(parts, values)))
