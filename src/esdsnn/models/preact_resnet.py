"""Pre-activation spiking ResNet-34 for ImageNet (SPEC §6): the residual stream stays real-valued."""

from __future__ import annotations

from torch import Tensor, nn

from ..layers.rate_norm import conv_bn
from ..layers.time import add_residual
from ..neurons.lif import LIF, LIFConfig
from .base import SpikingNet
from .registry import register_model


class PreActBlock(nn.Module):
    """``LIF → conv → BN → LIF → conv → BN`` added to the (projected) real-valued input."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: LIFConfig) -> None:
        super().__init__()
        self.lif1 = LIF(neuron)
        self.conv1, self.bn1 = conv_bn(c_in, c_out, 3, stride, bias=True)
        self.lif2 = LIF(neuron)
        self.conv2, self.bn2 = conv_bn(c_out, c_out, 3, bias=True)
        self.projection = None
        if stride != 1 or c_in != c_out:  # projects the spikes of the block's input
            self.projection = conv_bn(c_in, c_out, 1, stride, bias=True)

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
        self.stem = nn.Sequential(*conv_bn(in_channels, c_in, 7, 2, bias=True), nn.MaxPool2d(3, 2, 1))
        stages = []
        for i, (c_out, blocks) in enumerate(zip(stage_channels, stage_blocks)):
            layers = []
            for j in range(blocks):
                layers.append(PreActBlock(c_in, c_out, 2 if i > 0 and j == 0 else 1, neuron))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(LIF(neuron), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


@register_model("preact_resnet34")
def preact_resnet34(num_classes: int, in_channels: int, neuron: LIFConfig) -> PreActResNet:
    return PreActResNet(
        stage_channels=(64, 128, 256, 512),
        stage_blocks=(3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        neuron=neuron,
    )
