"""A training method is an ``nn.Module``: it chooses the pass and returns a loss record."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill.branches import build_branches_for
from ..distill.esd_loss import DistillConfig, esd_loss
from ..errors import ConfigError
from ..passes.context import MemorySaving


@dataclass
class MethodOutput:
    """What one training step produced.

    ``loss``: the scalar to backpropagate (already times the loss scale). ``logits``: the main head
    of the training pass ``[B, K]``. ``parts``: unscaled values for logging (``loss``, ``ce_main``,
    ``acc_main``; with branches ``ce_branches``, ``kd``, ``teacher_frac`` and ``acc_head{i}``).
    """

    loss: Tensor
    logits: Tensor
    parts: dict[str, float] = field(default_factory=dict)


class TrainingMethod(nn.Module):
    """Common part: optional ESD branches, the loss, the loss scale. Subclasses define the pass."""

    #: RateBP-based methods scale their loss by 1/T under ``loss_scale="auto"`` (SPEC §3).
    scales_loss_by_T: bool = False
    #: Set by :meth:`prepare_distributed`: makes the KD means global (see ``esd_loss``).
    reduce_teacher_counts: Optional[Callable[[Tensor], Tensor]] = None
    #: How the passes save memory (every switch gives the same results; see ``MemorySaving``).
    memory: MemorySaving = MemorySaving()

    def __init__(
        self,
        model: nn.Module,
        T: int,
        *,
        loss_scale: Union[str, float] = "auto",
        distill: Optional[DistillConfig] = None,
    ) -> None:
        super().__init__()
        if not isinstance(T, int) or T < 1:
            raise ConfigError(f"T must be an integer >= 1, got {T!r}")
        self.model = model
        self.T = T
        self.distill = distill
        self.branches = build_branches_for(model) if distill is not None else None
        self.branch_points = tuple(getattr(model, "branch_points", range(len(model.stage_channels) - 1)))
        if loss_scale == "auto":
            self.loss_scale = 1.0 / T if self.scales_loss_by_T else 1.0
        else:
            try:
                self.loss_scale = float(loss_scale)
            except (TypeError, ValueError):
                raise ConfigError(f"loss_scale must be 'auto' or a positive number, got {loss_scale!r}") from None
            if not self.loss_scale > 0:
                raise ConfigError(f"loss_scale must be 'auto' or a positive number, got {loss_scale!r}")

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Main logits and, when branches exist, the per-stage inputs of the branches."""
        raise NotImplementedError

    def prepare_distributed(self, reduce_counts: Callable[[Tensor], Tensor]) -> None:
        """Make this method's means over samples global before DDP wraps it: ``reduce_counts``
        maps this process's counts to the global count per process (ESD's reliable samples)."""
        self.reduce_teacher_counts = reduce_counts

    def forward(self, x: Tensor, y: Tensor) -> MethodOutput:
        logits, features = self.training_pass(x)
        parts: dict[str, Tensor] = {}
        if self.branches is None:
            loss = F.cross_entropy(logits, y)
            parts["ce_main"] = loss.detach()
        else:
            heads = [branch(features[p]) for branch, p in zip(self.branches, self.branch_points)] + [logits]
            reduce = self.reduce_teacher_counts if self.training else None
            loss, parts = esd_loss(heads, y, self.distill, reduce)
            for i, z in enumerate(heads[:-1]):
                parts[f"acc_head{i + 1}"] = (z.detach().argmax(-1) == y).float().mean()
        parts["loss"] = loss.detach()
        parts["acc_main"] = (logits.detach().argmax(-1) == y).float().mean()
        values = torch.stack([v.float() for v in parts.values()]).tolist()  # one device sync
        return MethodOutput(loss * self.loss_scale, logits, dict(zip(parts, values)))

    def extra_repr(self) -> str:
        return f"T={self.T}, loss_scale={self.loss_scale:.4g}, distill={self.distill}"
