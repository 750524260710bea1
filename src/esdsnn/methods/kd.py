"""ANN-to-SNN distillation (CKDSNN, SPEC §5): CE + SAMD + NLD from a frozen ReLU-twin teacher."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill.kd import KDConfig, class_activation_map, classifier_weight, nld_loss, samd_loss, student_attention
from ..errors import ConfigError
from ..models.anatomy import feature_map_and_classifier
from ..models.twin import is_relu_twin
from ..passes.ratebp import run_rate_stage, run_spike_stage
from ..passes.spike import run_bptt, run_spike_intermediates
from .base import MethodOutput, SpikeCounter, TrainingMethod, make_rate_safe, require_neurons, trace_firing_rate
from .registry import register_method


class ANNDistillation(TrainingMethod):
    """The SNN student learns from labels, the teacher's class activation map and noisy logits.

    The teacher is frozen, kept in eval mode, run under ``no_grad``, and deliberately not a
    submodule: it is not in ``parameters()``, the optimizer, checkpoints or DDP.
    """

    # set in __init__ with object.__setattr__ (not registered: see above)
    teacher: nn.Module
    teacher_tap: str
    teacher_classifier: list[nn.Linear]

    def __init__(self, model: nn.Module, T: int, *, teacher: nn.Module, kd: KDConfig = KDConfig(), **kwargs) -> None:
        self.scales_loss_by_T = kd.student_pass == "ratebp"
        require_neurons(model, "kd")
        if kd.student_pass == "ratebp":
            make_rate_safe(model)
        super().__init__(model, T, **kwargs)
        if not is_relu_twin(teacher):
            raise ConfigError("the kd teacher must be an ANN (a run trained with --method ann)")
        for what in ("num_classes", "in_channels"):
            mine, theirs = getattr(model, what, None), getattr(teacher, what, None)
            if mine is not None and theirs is not None and mine != theirs:
                raise ConfigError(f"the teacher has {what} {theirs} but the student {mine}")
        self.kd = kd
        self.student_tap, _ = feature_map_and_classifier(model, self.input_shape)
        teacher_tap, teacher_classifier = feature_map_and_classifier(teacher, self.input_shape)
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not registered on purpose
        object.__setattr__(self, "teacher_tap", teacher_tap)
        object.__setattr__(self, "teacher_classifier", teacher_classifier)

    def _apply(self, fn, *args, **kwargs):
        self.teacher._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, (last,) = run_spike_intermediates(self.teacher, x, 1, [self.teacher_tap])
        cam = class_activation_map(last, classifier_weight(self.teacher_classifier), logits.argmax(-1))
        return logits, cam

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if self.kd.student_pass == "bptt":
            with SpikeCounter(self.model) as spikes:
                out = run_bptt(self.model, x, self.T, [self.student_tap], memory=self.memory)
            self.step_firing_rate = spikes.rate()
            return out
        _, trace = run_spike_stage(self.model, x, self.T, memory=self.memory)
        self.step_firing_rate = trace_firing_rate(trace)
        return run_rate_stage(self.model, x, trace, [self.student_tap], memory=self.memory)

    def forward(self, x: Tensor, y: Tensor) -> MethodOutput:
        self.step_firing_rate = None
        logits, features = self.training_pass(x)
        teacher_logits, teacher_map = self.teacher_outputs(x)
        ce = F.cross_entropy(logits, y)
        samd = samd_loss(student_attention(features[-1], self.T), teacher_map, self.kd.samd_temperature)
        nld = nld_loss(logits, teacher_logits, weight=self.kd.nld_mix, tau=self.kd.nld_tau)
        loss = ce + self.kd.samd_weight * samd + self.kd.nld_weight * nld
        parts = {
            "ce_main": ce.detach(),
            "samd": samd.detach(),
            "nld": nld.detach(),
            "loss": loss.detach(),
            "acc_main": (logits.detach().argmax(-1) == y).float().mean(),
            "acc_teacher": (teacher_logits.argmax(-1) == y).float().mean(),
        }
        if self.step_firing_rate is not None:
            parts["firing_rate"] = self.step_firing_rate
        values = torch.stack([v.float() for v in parts.values()]).tolist()
        return MethodOutput(loss * self.loss_scale, logits, dict(zip(parts, values)))


@register_method(
    "kd",
    description="SNN student distilled from a trained ANN teacher (SAMD + NLD)",
    training_pass="BPTT or RateBP (kd.student_pass)",
    sections=("kd",),
    needs=("teacher",),
    teacher_method="ann",
    scales_loss_by_T=lambda settings: settings.get("student_pass") == "ratebp",
)
def kd(
    model: nn.Module, T: int, *, kd: KDConfig, teacher: Optional[nn.Module] = None, **common: Any
) -> ANNDistillation:
    if teacher is None:
        raise ConfigError("method kd needs a teacher: train one with --method ann, then pass --teacher-run RUN_DIR")
    return ANNDistillation(model, T, teacher=teacher, kd=kd, **common)
