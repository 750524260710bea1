"""Spiking ResNets for CIFAR (ResNet-18, ResNet-19), the small default for 8×8 digits (SPEC §6) and a
compact one for other small images."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..layers.rate_norm import conv_bn
from ..layers.time import add_residual
from ..neurons.lif import LIF, LIFConfig
from .base import SpikingNet
from .registry import register_model


class BasicBlock(nn.Module):
    """conv-BN-LIF-conv-BN, plus the (projected) shortcut, then LIF."""

    def __init__(self, c_in: int, c_out: int, stride: int, neuron: LIFConfig) -> None:
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.lif1 = LIF(neuron)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        self.lif2 = LIF(neuron)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.lif1(self.conv1(x)))
        return self.lif2(add_residual(out, self.shortcut(x)))


class SpikingResNet(SpikingNet):
    """conv3×3 stem + BN + LIF, stages of BasicBlocks, global average pooling, classifier."""

    def __init__(
        self,
        *,
        stem_channels: int,
        stage_channels: Sequence[int],
        stage_blocks: Sequence[int],
        stage_strides: Sequence[int],
        num_classes: int,
        in_channels: int,
        neuron: LIFConfig,
        hidden_features: int | None = None,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stage_channels = tuple(stage_channels)
        self.stem = nn.Sequential(conv_bn(in_channels, stem_channels, 3, stem_stride), LIF(neuron))
        stages, c_in = [], stem_channels
        for c_out, blocks, stride in zip(stage_channels, stage_blocks, stage_strides):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride if i == 0 else 1, neuron))
                c_in = c_out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden_features is None:
            head.append(nn.Linear(c_in, num_classes))
        else:
            head += [nn.Linear(c_in, hidden_features), LIF(neuron), nn.Linear(hidden_features, num_classes)]
        self.head = nn.Sequential(*head)


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, neuron: LIFConfig) -> SpikingResNet:
    return SpikingResNet(
        stem_channels=64, stage_channels=(64, 128, 256, 512), stage_blocks=(2, 2, 2, 2), stage_strides=(1, 2, 2, 2),
        num_classes=num_classes, in_channels=in_channels, neuron=neuron,
    )


@register_model("resnet19")
def resnet19(num_classes: int, in_channels: int, neuron: LIFConfig) -> SpikingResNet:
    return SpikingResNet(
        stem_channels=128, stage_channels=(128, 256, 512), stage_blocks=(3, 3, 2), stage_strides=(1, 2, 2),
        num_classes=num_classes, in_channels=in_channels, neuron=neuron, hidden_features=256,
    )


@register_model("digits_resnet")
def digits_resnet(num_classes: int, in_channels: int, neuron: LIFConfig) -> SpikingResNet:
    """A small ResNet for 8×8 inputs (the bundled digits): 32-64-128 channels, one block a stage."""
    return SpikingResNet(
        stem_channels=32, stage_channels=(32, 64, 128), stage_blocks=(1, 1, 1), stage_strides=(1, 2, 2),
        num_classes=num_classes, in_channels=in_channels, neuron=neuron,
    )


@register_model("compact_resnet")
def compact_resnet(num_classes: int, in_channels: int, neuron: LIFConfig) -> SpikingResNet:
    """A compact ResNet for small images (the default for 17–64 px data without a recipe, e.g.
    28×28): a stride-2 stem of 16 channels, then 32- and 64-channel stages of one block each,
    both stride 2 (a 28×28 input is seen at 14, 7 and 4 px): about 73 k parameters, sized to train
    an epoch of 60,000 images in about a minute and a half on two CPU cores."""
    return SpikingResNet(
        stem_channels=16, stem_stride=2, stage_channels=(32, 64), stage_blocks=(1, 1), stage_strides=(2, 2),
        num_classes=num_classes, in_channels=in_channels, neuron=neuron,
    )
