"""Pre-activation spiking ResNet-34 for ImageNet (SPEC §6): the residual stream stays real-valued."""
from __future__ import annotations

from torch import Tensor, nn

from ..layers.conv import Conv2d
from ..layers.rate_norm import RateBatchNorm2d
from ..layers.time import add_residual
from ..neurons.lif import LIFConfig
from .base import SpikingNet
from .registry import register_model


class PreActBlock(nn.Module):
    """``LIF → conv → BN → LIF → conv → BN`` added to the (projected) real-valued input."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: LIFConfig) -> None:
        super().__init__()
        # not in place: its input is the residual stream, added below; its spikes feed convs only
        self.lif1 = neuron.build(compact=True)
        self.conv1 = Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True)
        self.bn1 = RateBatchNorm2d(c_out, inplace=True)
        self.lif2 = neuron.build(inplace=True, compact=True)
        self.conv2 = Conv2d(c_out, c_out, 3, padding=1, bias=True)
        self.bn2 = RateBatchNorm2d(c_out, inplace=True)
        self.projection = None
        if stride != 1 or c_in != c_out:  # projects the spikes of the block's input
            self.projection = nn.Sequential(
                Conv2d(c_in, c_out, 1, stride=stride, bias=True), RateBatchNorm2d(c_out, inplace=True)
            )

    def forward(self, x: Tensor) -> Tensor:
        spikes = self.lif1(x)
        out = self.bn2(self.conv2(self.lif2(self.bn1(self.conv1(spikes)))))
        return add_residual(out, x if self.projection is None else self.projection(spikes))


class PreActResNet(SpikingNet):
    """7×7/2 conv + BN stem (no LIF), 3×3/2 max-pool, pre-activation stages, LIF, pooling, linear."""

    def __init__(self, *, stage_channels, stage_blocks, num_classes: int, in_channels: int, neuron: LIFConfig) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stage_channels = tuple(stage_channels)
        self.branch_style = "imagenet"
        c_in = stage_channels[0]
        self.stem = nn.Sequential(
            Conv2d(in_channels, c_in, 7, stride=2, padding=3, bias=True), RateBatchNorm2d(c_in, inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        for i, (c_out, blocks) in enumerate(zip(stage_channels, stage_blocks)):
            layers = []
            for j in range(blocks):
                layers.append(PreActBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1, neuron))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(neuron.build(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


@register_model("preact_resnet34")
def preact_resnet34(num_classes: int, in_channels: int, neuron: LIFConfig) -> PreActResNet:
    return PreActResNet(stage_channels=(64, 128, 256, 512), stage_blocks=(3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, neuron=neuron)
