"""What every spiking model declares: a stem, named stages, a head.

Activations are folded ``[steps·B, C, H, W]`` inside the model; the running pass says how many
steps are folded and averages the head's output over them. Stages are declared so that ESD
branches find them without editing model code. (Any ``nn.Module`` of esdsnn layers is a model
too; a ``SpikingNet`` only adds declared stages.)
"""

from __future__ import annotations

from torch import Tensor, nn


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

    def forward(self, x: Tensor) -> Tensor:
        """Folded output ``[steps·B, K]`` of folded input ``[steps·B, C, H, W]`` (the passes
        average it over the steps)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def stage_names(self) -> list[str]:
        """Dotted names of the stages (what the passes tap for ESD branches)."""
        return [f"stages.{i}" for i in range(len(self.stages))]
