"""What every spiking model declares: a stem, named stages, a head.

Activations are folded ``[steps·B, C, H, W]`` inside the model; the running pass says how many
steps are folded. The readout averages the head's output over time. Stages are declared so that
ESD branches, reports and exports find them without editing model code.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers.time import time_mean


class SpikingNet(nn.Module):
    """Base of all esdsnn models: ``stem -> stages[0..L-1] -> head``.

    Subclasses set ``self.stem``, ``self.stages`` (an ``nn.ModuleList``), ``self.head``,
    ``self.stage_channels`` (output channels of each stage) and ``self.num_classes``; optionally
    ``self.branch_points`` (stages that feed an ESD branch; default all but the last) and
    ``self.branch_style`` (``"cifar"``: DSBlocks; ``"imagenet"``: DSBlocks interleaved with
    residual conv blocks).
    """

    branch_style: str = "cifar"

    @property
    def branch_points(self) -> tuple[int, ...]:
        return getattr(self, "_branch_points", tuple(range(len(self.stage_channels) - 1)))

    @branch_points.setter
    def branch_points(self, points: tuple[int, ...]) -> None:
        self._branch_points = tuple(points)

    stem: nn.Module
    stages: nn.ModuleList
    head: nn.Module
    stage_channels: tuple[int, ...]
    num_classes: int
    in_channels: int

    def _float_dtype(self) -> torch.dtype:
        """The parameters' float type: packed stage outputs are averaged in it."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.get_default_dtype())

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, K]`` (time-averaged) of folded input ``[steps·B, C, H, W]``."""
        return self.forward_intermediates(x, keep=False)[0]

    def forward_intermediates(self, x: Tensor, keep: bool = True) -> tuple[Tensor, list[Tensor]]:
        """Logits and the time-averaged output of every stage (``[B, C_l, H_l, W_l]``)."""
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            if keep:
                features.append(time_mean(x, self._float_dtype()))
        return time_mean(self.head(x)), features
