"""Lightweight ANN branches on intermediate stages (SPEC §4), built from the model's declared stages."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Optional, cast

from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.conv import DepthwiseConv2d
from ..models.anatomy import Anatomy, probe


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class DSBlock(nn.Module):
    """Depthwise-separable residual block that halves the resolution: ``c_in -> c_out``.

    ``op = dw3x3(s2) → pw1x1 → BN → ReLU → dw3x3 → pw1x1(c_in→c_out) → BN → ReLU``;
    ``shortcut = conv1x1(s2) → BN``; ``out = ReLU(op + shortcut)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        self.op = nn.Sequential(
            DepthwiseConv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),  # fast bf16 gradient
            nn.Conv2d(c_in, c_in, 1, bias=False),
            *_bn_relu(c_in),
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            *_bn_relu(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.op(x) + self.shortcut(x))


class ResidualConvBlock(nn.Module):
    """Plain ANN residual block ``conv3×3-BN-ReLU-conv3×3-BN + x, ReLU`` (ImageNet branches)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            *_bn_relu(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + x)


class Branch(nn.Sequential):
    """DSBlocks to the last stage's width, adaptive global pooling, linear head.

    ``style="imagenet"`` follows every DSBlock with a :class:`ResidualConvBlock`.
    """

    def __init__(self, channel_plan: Sequence[int], num_classes: int, style: str = "cifar") -> None:
        if style not in ("cifar", "imagenet"):
            raise ValueError(f"branch style must be 'cifar' or 'imagenet', got {style!r}")
        blocks: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channel_plan):
            blocks.append(DSBlock(c_in, c_out))
            if style == "imagenet":
                blocks.append(ResidualConvBlock(c_out))
        super().__init__(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channel_plan[-1], num_classes))


def build_branches(
    stage_channels: Sequence[int],
    num_classes: int,
    branch_points: Sequence[int] | None = None,
    style: str = "cifar",
) -> nn.ModuleList:
    """One branch per branch point (default: every stage but the last).

    Branch at stage ``l`` has one DSBlock per remaining stage; block ``k`` maps the width of stage
    ``l+k`` to that of stage ``l+k+1`` (for the ResNets this doubles the channels each block:
    ResNet-18 on CIFAR gets 3, 2, 1 blocks).
    """
    stage_channels = list(stage_channels)
    if len(stage_channels) < 2:
        raise ValueError("self-distillation needs a model with at least two stages")
    points = range(len(stage_channels) - 1) if branch_points is None else branch_points
    if any(not 0 <= p < len(stage_channels) - 1 for p in points):
        raise ValueError(f"branch points {list(points)} must lie in 0..{len(stage_channels) - 2}")
    return nn.ModuleList(Branch(stage_channels[p:], num_classes, style) for p in points)


def build_branches_for(model: nn.Module) -> nn.ModuleList:
    """The ESD branches of a model, read from its declared stages (any registered model)."""
    # declared plain attributes of the model (nn.Module's __getattr__ types them as submodules)
    return build_branches(
        cast(Sequence[int], model.stage_channels),
        cast(int, model.num_classes),
        getattr(model, "branch_points", None),
        getattr(model, "branch_style", "cifar"),
    )


def channel_plan(c_in: int, c_out: int, blocks: int) -> list[int]:
    """Widths from ``c_in`` to ``c_out`` over ``blocks`` DSBlocks, geometric (doubling when the
    ratio is ``2**blocks``, as in the ResNets)."""
    return [c_in] + [int(round(c_in * (c_out / c_in) ** (k / blocks))) for k in range(1, blocks)] + [c_out]


def plan_named_branches(anatomy: Anatomy, names: Sequence[str]) -> list[list[int]]:
    """The channel plan of a branch on each named stage: one DSBlock (stride 2) per halving of the
    resolution from the stage to the model's last spatial layer, widths growing geometrically to
    the last spatial layer's channels. Names that are not spiking stages before it are errors."""
    last = anatomy.last_spatial()
    if last is None:
        raise ConfigError("the model has no spatial layer ([C, H, W] output): ESD branches need feature maps")
    plans = []
    known = ", ".join(anatomy.branch_stages()) or "none"
    for name in names:
        out = anatomy.outputs.get(name)
        if out is None:
            raise ConfigError(
                f"no submodule {name!r} ran in the model; spiking stages that could feed a branch: {known}"
            )
        if out.name == last.name:
            raise ConfigError(
                f"stage {name!r} is the model's last feature map, which the main head already reads; "
                f"a branch needs an earlier one: {known}"
            )
        if len(out.shape) != 3 or out.order >= last.order:
            raise ConfigError(
                f"stage {name!r} comes after the last spatial layer {last.name!r} (output {out.shape}); "
                f"a branch needs a feature map before it: {known}"
            )
        if not out.spiking:
            raise ConfigError(
                f"stage {name!r} does not output spikes (its output is real-valued); name a module "
                f"whose output is a LIF layer's or a SEW connection's spikes: {known}"
            )
        c, h = out.shape[0], out.shape[1]
        blocks = max(1, int(round(math.log2(max(h, 1) / max(last.shape[1], 1)))))
        plans.append(channel_plan(c, last.shape[0], blocks))
    return plans


def build_named_branches(
    model: nn.Module, names: Sequence[str], input_shape: Optional[Sequence[int]] = None, style: str = "cifar"
) -> nn.ModuleList:
    """ESD branches on the submodules of ``model`` named ``names``, planned from one dry run."""
    anatomy = probe(model, input_shape)
    if not names:
        raise ConfigError("ESD needs at least one stage to branch from")
    return nn.ModuleList(Branch(plan, anatomy.num_classes, style) for plan in plan_named_branches(anatomy, names))
