"""The optimiser of every method: SGD with momentum, weight decay on conv/linear weights only,
a cosine schedule stepped per epoch down to 0, no warm-up (SPEC §7).

Extending a run (``--resume DIR --epochs N``) re-plans the cosine over N epochs: every epoch
after the extension point gets the learning rate it has in an N-epoch run,
``lr·(1 + cos(π·e/N))/2`` after ``e`` completed epochs. The weights equal those of an N-epoch run
only when it is extended before its first epoch is complete (the epochs before ran with the
shorter schedule's learning rates); a finished run's rate, which had reached 0, rises again to
that of epoch ``e`` of N (a warm restart)."""
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


def make_optimizer(method: nn.Module, optim: OptimConfig) -> tuple[torch.optim.Optimizer, Any]:
    """SGD with momentum and a cosine schedule stepped per epoch down to 0 (no warm-up)."""
    optimizer = torch.optim.SGD(parameter_groups(method, optim.weight_decay), lr=optim.lr, momentum=optim.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.epochs, eta_min=0.0)
    return optimizer, scheduler


def cosine_lr(base_lr: float, done: int, epochs: int) -> float:
    """The learning rate of the epoch after ``done`` completed ones in an ``epochs``-epoch run."""
    return base_lr * (1 + math.cos(math.pi * done / epochs)) / 2


def extend_schedule(optimizer: torch.optim.Optimizer, scheduler: Any, *, done: int, planned: int, epochs: int) -> str:
    """Re-plan the cosine of a run with ``done`` of ``planned`` epochs over ``epochs`` epochs
    (see the module notes); returns the line that says so."""
    if epochs < done:
        raise ConfigError(f"the run has already trained {done} epochs; --epochs must be at least {done}")
    scheduler.T_max = epochs
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = cosine_lr(base, done, epochs)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return (f"schedule re-planned from {planned} to {epochs} epochs: epoch {done + 1} continues at lr "
            f"{optimizer.param_groups[0]['lr']:.4g}, the cosine of a {epochs}-epoch run")


__all__ = ["cosine_lr", "extend_schedule", "make_optimizer", "parameter_groups"]
