"""The optimiser of every method: SGD with momentum, weight decay on conv/linear weights only,
a cosine schedule down to 0, no warm-up (SPEC §7). The cosine moves once per epoch
(``lr_schedule: epoch``, the paper's recipes) or after every training step (``step``, the default
on data without a recipe: over a budget of a few epochs a per-epoch cosine never gets near 0 —
two epochs run at lr and lr/2 — and the last weights are those of a large learning rate).

Extending a run (``--resume DIR --epochs N``) re-plans the cosine over N epochs: every epoch (or
step) after the extension point gets the learning rate it has in an N-epoch run,
``lr·(1 + cos(π·u/U))/2`` after ``u`` of ``U`` units (epochs or steps). The weights equal those of
an N-epoch run only when it is extended before its first epoch is complete (per epoch) or after
its first step (per step): the units before ran with the shorter schedule's learning rates. A
finished run's rate, which had reached 0, rises again to that of its position in the N-epoch run
(a warm restart)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from esdsnn.config import OptimConfig
from esdsnn.errors import ConfigError


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: conv/linear weights with ``weight_decay``; everything else (BN parameters,
    biases, neuron parameters) without. Frozen parameters are left out."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for sub in module.modules():
        for name, p in sub.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = name == "weight" and isinstance(sub, (nn.modules.conv._ConvNd, nn.Linear))
            (decay if is_weight else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class CosineLR(torch.optim.lr_scheduler.CosineAnnealingLR):
    """The cosine to 0 over the run's epochs, or over its steps (``per_step``). The loop calls
    :meth:`after_step` and :meth:`after_epoch`; the one that matches moves the schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, per_step: bool) -> None:
        self.per_step = per_step
        self.units_per_epoch = steps_per_epoch if per_step else 1
        super().__init__(optimizer, T_max=epochs * self.units_per_epoch, eta_min=0.0)

    def after_step(self) -> None:
        if self.per_step:
            self.step()

    def after_epoch(self) -> None:
        if not self.per_step:
            self.step()


def make_optimizer(
    method: nn.Module, optim: OptimConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, CosineLR]:
    """SGD with momentum and a cosine schedule down to 0 (no warm-up), moved per epoch or, with
    ``lr_schedule: step``, per training step."""
    if optim.lr_schedule is None or optim.lr is None or optim.epochs is None:
        raise ValueError("lr, epochs or lr_schedule is unset: resolve the config (TrainConfig.resolved) first")
    optimizer = torch.optim.SGD(parameter_groups(method, optim.weight_decay), lr=optim.lr, momentum=optim.momentum)
    return optimizer, CosineLR(optimizer, optim.epochs, steps_per_epoch, per_step=optim.lr_schedule == "step")


def cosine_lr(base_lr: float, done: int, total: int) -> float:
    """The learning rate after ``done`` of ``total`` units (epochs or steps) of a cosine to 0."""
    return base_lr * (1 + math.cos(math.pi * done / total)) / 2


def extend_schedule(
    optimizer: torch.optim.Optimizer, scheduler: CosineLR, *, done: int, planned: int, epochs: int
) -> str:
    """Re-plan the cosine of a run with ``done`` of ``planned`` epochs over ``epochs`` epochs
    (see the module notes); returns the line that says so."""
    if epochs < done:
        raise ConfigError(f"the run has already trained {done} epochs; --epochs must be at least {done}")
    scheduler.T_max = epochs * scheduler.units_per_epoch
    position = scheduler.last_epoch if scheduler.per_step else done  # steps so far, or epochs
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = cosine_lr(float(base), position, scheduler.T_max)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return (
        f"schedule re-planned from {planned} to {epochs} epochs: epoch {done + 1} continues at lr "
        f"{optimizer.param_groups[0]['lr']:.4g}, the cosine of a {epochs}-epoch run"
    )


__all__ = ["CosineLR", "cosine_lr", "extend_schedule", "make_optimizer", "parameter_groups"]
