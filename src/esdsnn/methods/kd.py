"""ANN-to-SNN distillation (CKDSNN, SPEC §5): CE + SAMD + NLD from a frozen ReLU-twin teacher."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill.kd import KDConfig, class_activation_map, classifier_weight, nld_loss, samd_loss, student_attention
from ..errors import ConfigError
from ..models.twin import is_relu_twin
from ..passes.ratebp import run_rate_stage, run_spike_stage
from ..passes.spike import run_bptt, run_spike_intermediates
from .base import MethodOutput, TrainingMethod
from .registry import register_method


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
        logits, features = run_spike_intermediates(self.teacher, x, 1)
        last = features[-1]
        cam = class_activation_map(last, classifier_weight(self.teacher.head), logits.argmax(-1))
        return logits, cam

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if self.kd.student_pass == "bptt":
            return run_bptt(self.model, x, self.T, intermediates=True, memory=self.memory)
        _, trace = run_spike_stage(self.model, x, self.T, memory=self.memory)
        return run_rate_stage(self.model, x, trace, intermediates=True, memory=self.memory)

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


@register_method("kd", description="SNN student distilled from a trained ANN teacher (SAMD + NLD)",
                 training_pass="BPTT or RateBP (kd.student_pass)", sections=("kd",), needs=("teacher",),
                 teacher_method="ann")
def kd(model: nn.Module, T: int, *, loss_scale: Union[str, float] = "auto", kd: KDConfig,
       teacher: Optional[nn.Module] = None) -> ANNDistillation:
    if teacher is None:
        raise ConfigError("method kd needs a teacher: train one with --method ann, then pass --teacher-run RUN_DIR")
    return ANNDistillation(model, T, teacher=teacher, kd=kd, loss_scale=loss_scale)
