"""The optimiser of every method: SGD with momentum, weight decay on conv/linear weights only,
a cosine schedule stepped per epoch down to 0, no warm-up (SPEC §7)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from esdsnn.config import OptimConfig


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


__all__ = ["make_optimizer", "parameter_groups"]
