"""VGG-SNN for event data (CIFAR10-DVS recipe, SPEC §6)."""

from __future__ import annotations

from torch import nn

from ..layers.rate_norm import conv_bn
from ..neurons.lif import LIF, LIFConfig
from .base import SpikingNet
from .registry import register_model

#: widths of the conv-BN-LIF layers; "A" ends a stage with 2×2 average pooling
VGG_SNN_PLAN = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")


class VGGSNN(SpikingNet):
    """conv3×3 (bias) + BN + LIF layers in four pooled stages, adaptive pooling to 3×3, linear."""

    def __init__(
        self, *, plan=VGG_SNN_PLAN, num_classes: int, in_channels: int, neuron: LIFConfig, pooled_size: int = 3
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.stem = nn.Identity()
        stages: list[nn.Module] = []
        layers: list[nn.Module] = []
        widths: list[int] = []
        c_in = in_channels
        for item in plan:
            if item == "A":
                layers.append(nn.AvgPool2d(2))
                stages.append(nn.Sequential(*layers))
                widths.append(c_in)
                layers = []
                continue
            layers += [*conv_bn(c_in, item, 3, bias=True), LIF(neuron)]
            c_in = item
        if layers:
            raise ValueError("the VGG plan must end with a pooling stage 'A'")
        self.stages = nn.ModuleList(stages)
        self.stage_channels = tuple(widths)
        self.branch_points = (1, 2)  # after the 2nd and 3rd pooling
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(pooled_size), nn.Flatten(), nn.Linear(c_in * pooled_size**2, num_classes)
        )


@register_model("vggsnn")
def vggsnn(num_classes: int, in_channels: int, neuron: LIFConfig) -> VGGSNN:
    return VGGSNN(num_classes=num_classes, in_channels=in_channels, neuron=neuron)
