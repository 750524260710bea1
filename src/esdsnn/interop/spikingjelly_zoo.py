"""SpikingJelly's model zoo on esdsnn layers: the networks and blocks of
``spikingjelly.activation_based.model`` (``spiking_resnet``, ``sew_resnet``, ``spiking_vgg``).

Their ``forward`` cannot run as it is on folded ``[T·B, ...]`` activations: the networks ask their
pooling layer for its step mode to choose the dimension they flatten, and the SEW blocks call a
module-level function (``sew_function``) that knows nothing of packed spikes or RateBP's rate
stage. Each class here holds the converted children of its SpikingJelly twin under the same names
(so the state-dict keys and the stage names ``layer1``…``layer4``, ``features.N`` are
SpikingJelly's) and computes what the twin's multi-step ``forward`` computes, read from
SpikingJelly's source (the same in 0.0.0.0.14 and 2.0.0):

- ``SpikingResNet``/``SEWResNet``: stem ``conv1 → bn1 → sn1 → maxpool``, ``layer1..4``,
  ``avgpool``, flatten, ``fc``; ``SpikingVGG``: ``features → avgpool``, flatten, ``classifier``;
- spiking ``BasicBlock``/``Bottleneck``: the branch's last BatchNorm plus the shortcut
  (``downsample(x)`` or ``x``), then the last neuron;
- SEW ``BasicBlock``: ``g(shortcut, branch)``, SEW ``Bottleneck``: ``g(branch, shortcut)``, with
  the shortcut ``downsample_sn(downsample(x))`` or ``x`` and ``g`` a
  :class:`~esdsnn.layers.SpikeElementWise` (its child ``connect``, without state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from ..layers.sew import SpikeElementWise
from ..layers.time import add_residual


class _Twin(nn.Module):
    """Holds the converted children of a SpikingJelly module under their names."""

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)

    if TYPE_CHECKING:
        # for the type checker only: the children are added by their twin's names, so any attribute
        # read here is one of them (nn.Module's own __getattr__ says "a tensor or a module")
        def __getattr__(self, name: str) -> nn.Module: ...


class _Block(_Twin):
    """A residual block: its ``downsample`` is ``None`` where the shortcut is the input itself."""

    downsample: Optional[nn.Module]

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__(children)
        if "downsample" not in children:
            self.downsample = None


class ZooResNet(_Twin):
    """SpikingJelly's ``SpikingResNet`` or ``SEWResNet``."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.sn1(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ZooVGG(_Twin):
    """SpikingJelly's ``SpikingVGG``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SpikingBasicBlock(_Block):
    """``spiking_resnet.BasicBlock``: ``sn2(bn2(conv2(sn1(bn1(conv1(x))))) + shortcut)``."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.sn2(add_residual(out, shortcut))


class SpikingBottleneck(_Block):
    """``spiking_resnet.Bottleneck``: three conv-BN stages, the last added to the shortcut."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.sn3(add_residual(out, shortcut))


class SEWBasicBlock(_Block):
    """``sew_resnet.BasicBlock``: ``connect(shortcut, branch)``."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        shortcut = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return self.connect(shortcut, out)


class SEWBottleneck(_Block):
    """``sew_resnet.Bottleneck``: ``connect(branch, shortcut)`` (SpikingJelly's argument order)."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        out = self.sn3(self.bn3(self.conv3(out)))
        shortcut = x if self.downsample is None else self.downsample_sn(self.downsample(x))
        return self.connect(out, shortcut)


Builder = Callable[[nn.Module, dict[str, nn.Module]], nn.Module]


def _twin(cls: type[_Twin]) -> Builder:
    return lambda source, children: cls(children)


def _sew(cls: type[_Twin]) -> Builder:
    return lambda source, children: cls({**children, "connect": SpikeElementWise(str(source.cnf))})


#: (module file, class name) of a zoo class -> the builder of its esdsnn twin from its converted children
ZOO: dict[tuple[str, str], Builder] = {
    ("spiking_resnet", "SpikingResNet"): _twin(ZooResNet),
    ("sew_resnet", "SEWResNet"): _twin(ZooResNet),
    ("spiking_vgg", "SpikingVGG"): _twin(ZooVGG),
    ("spiking_resnet", "BasicBlock"): _twin(SpikingBasicBlock),
    ("spiking_resnet", "Bottleneck"): _twin(SpikingBottleneck),
    ("sew_resnet", "BasicBlock"): _sew(SEWBasicBlock),
    ("sew_resnet", "Bottleneck"): _sew(SEWBottleneck),
}


def zoo_builder(module: nn.Module) -> Optional[Builder]:
    """The builder of ``module``'s esdsnn twin if it is one of SpikingJelly's zoo classes."""
    cls = type(module)
    if not cls.__module__.startswith("spikingjelly.activation_based.model."):
        return None
    return ZOO.get((cls.__module__.rsplit(".", 1)[1], cls.__name__))


__all__ = [
    "ZOO",
    "SEWBasicBlock",
    "SEWBottleneck",
    "SpikingBasicBlock",
    "SpikingBottleneck",
    "ZooResNet",
    "ZooVGG",
    "zoo_builder",
]
