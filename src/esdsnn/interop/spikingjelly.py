"""SpikingJelly models in: the same network on esdsnn layers, with its weights and settings.

:func:`from_spikingjelly` converts a model built from SpikingJelly's ``activation_based`` neurons
(``LIFNode``, ``IFNode``, ``ParametricLIFNode``) and layers (``Conv2d``, ``BatchNorm1d/2d``,
``Linear``, pooling, ``Flatten``, ``Dropout``, ``SeqToANNContainer``), inside ``nn.Sequential``
or modules whose ``forward`` only chains submodules and adds residuals, and the networks of
SpikingJelly's model zoo (``spiking_resnet*``, ``sew_resnet*`` with ADD / AND / IAND,
``spiking_vgg*``: :mod:`esdsnn.interop.spikingjelly_zoo`). SpikingJelly's
multi-step layers act on ``[T, B, ...]``; esdsnn's on the folded ``[T·B, ...]``, which is what
their multi-step versions compute, so a converted model's spike pass equals SpikingJelly's
multi-step output (tested against SpikingJelly itself).

Neurons map exactly (SPEC §2): ``decay = 1 − 1/τ``; ``v_reset=None`` is the soft reset, a number
the hard reset to it; ``detach_reset``; the sigmoid or atan surrogate with its α; an IF node is a
LIF with decay 1; a parametric LIF has a learnable decay ``1 − sigmoid(w)``. SpikingJelly's
``decay_input=True`` charges with ``(x + v_reset)/τ`` (and its hard-reset ``decay_input=False``
adds ``v_reset/τ``): an :class:`~esdsnn.layers.Affine` in front of the LIF does exactly that.
RateBP gives no gradient to a learnable decay: ``learnable_decay=False`` converts a parametric
LIF with its decay fixed at its current value, for the RateBP-based methods. Anything else is
refused in one line that names it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional, TypeVar, cast

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.affine import Affine
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.rate_norm import RateBatchNorm1d, RateBatchNorm2d
from ..neurons.lif import IF_LOGIT, LIF, LIFConfig
from .spikingjelly_zoo import zoo_builder

_M = TypeVar("_M", bound=nn.Module)
# nn.Conv2d's sizes are typed as every _ConvNd's (tuple[int, ...]); its __init__ takes pairs
_Pair = tuple[int, int]

SURROGATE_NAMES = {"Sigmoid": "sigmoid", "ATan": "atan"}
# each pooling class and the constructor arguments that define it
_POOLS: dict[type, tuple[str, ...]] = {
    **{
        cls: ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
        for cls in (nn.MaxPool1d, nn.MaxPool2d)
    },
    **{
        cls: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
        for cls in (nn.AvgPool1d, nn.AvgPool2d)
    },
    **{cls: ("output_size",) for cls in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)},
}


def _is_spikingjelly(module: nn.Module) -> bool:
    return type(module).__module__.startswith("spikingjelly")


def _at(where: str, module: nn.Module) -> str:
    """How a message names the module at ``where`` (the model itself at the top)."""
    return where or f"the model ({type(module).__name__})"


def _child(where: str, name: object) -> str:
    return f"{where}.{name}" if where else str(name)


def _surrogate(node: nn.Module, where: str) -> tuple[str, float]:
    fn = getattr(node, "surrogate_function", None)
    name = SURROGATE_NAMES.get(type(fn).__name__)
    if fn is None or name is None or not getattr(fn, "spiking", True):
        raise ConfigError(
            f"{where}: surrogate {type(fn).__name__} has no esdsnn counterpart; esdsnn has "
            f"{', '.join(f'{k} ({v})' for k, v in SURROGATE_NAMES.items())}"
        )
    return name, float(fn.alpha)


def _lif(config: LIFConfig, like: Optional[Tensor]) -> LIF:
    """A LIF whose decay is held in the model's float type from the start (as SpikingJelly
    computes with its τ in that type)."""
    lif = LIF(config)
    if like is not None:
        d = config.decay
        logit = IF_LOGIT if d == 1.0 else math.log(d / (1.0 - d))
        lif.to(like.device)
        lif.decay_logit.data = torch.tensor(logit, dtype=like.dtype, device=like.device)
    return lif


def _neuron(node: Any, where: str, like: Optional[Tensor], learnable_decay: bool) -> nn.Module:
    """A LIF (behind an Affine where SpikingJelly scales or shifts the input) for an SJ node."""
    # node: Any, as SpikingJelly has no type information; its attributes are read by name
    kind = type(node).__name__
    where = _at(where, node)
    surrogate, alpha = _surrogate(node, where)
    v_reset = node.v_reset
    reset: dict[str, Any] = dict(reset="soft") if v_reset is None else dict(reset="hard", v_reset=float(v_reset))
    common: dict[str, Any] = dict(
        threshold=float(node.v_threshold),
        detach_reset=bool(node.detach_reset),
        surrogate=surrogate,
        surrogate_alpha=alpha,
        **reset,
    )
    shift = 0.0 if v_reset is None else float(v_reset)
    if kind == "IFNode":
        return _lif(LIFConfig(decay=1.0, **common), like)
    if kind == "LIFNode":
        tau = float(node.tau)
        lif = _lif(LIFConfig(decay=1.0 - 1.0 / tau, **common), like)
        if node.decay_input:  # h = v + (x - (v - v_reset)) / tau
            return nn.Sequential(Affine(1.0 / tau, shift / tau), lif)
        if shift:  # h = v - (v - v_reset) / tau + x
            return nn.Sequential(Affine(1.0, shift / tau), lif)
        return lif
    if kind == "ParametricLIFNode":
        if node.decay_input:
            raise ConfigError(
                f"{where}: ParametricLIFNode with decay_input=True scales its input by the learnable "
                f"1/tau; esdsnn's learnable LIF does not (rebuild it with decay_input=False)"
            )
        if shift:
            raise ConfigError(
                f"{where}: ParametricLIFNode leaks towards v_reset={shift} with a learnable rate; "
                f"esdsnn's leaks towards 0 (use v_reset=0.0 or None)"
            )
        k = float(torch.sigmoid(node.w.detach()))
        lif = LIF(LIFConfig(decay=1.0 - k, learnable_decay=learnable_decay, **common)).to(node.w.device, node.w.dtype)
        with torch.no_grad():
            lif.decay_logit.copy_(-node.w.detach())  # 1 - sigmoid(w) = sigmoid(-w)
        return lif
    raise ConfigError(
        f"{where}: SpikingJelly neuron {kind} is not supported; esdsnn converts LIFNode, IFNode and ParametricLIFNode"
    )


def _with_state(new: _M, old: nn.Module) -> _M:
    """``new`` on ``old``'s device and float type, holding ``old``'s parameters and buffers."""
    ref = next((t for t in old.state_dict().values() if t.is_floating_point()), None)
    if ref is not None:
        new.to(device=ref.device, dtype=ref.dtype)
    new.load_state_dict(old.state_dict())
    return new.train(old.training)


def _copy_norm(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    cls = RateBatchNorm1d if isinstance(bn, nn.BatchNorm1d) else RateBatchNorm2d
    return _with_state(cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats), bn)


def _copy_conv(conv: nn.Conv2d) -> Conv2d:
    return _with_state(
        Conv2d(
            conv.in_channels,
            conv.out_channels,
            cast(_Pair, conv.kernel_size),
            stride=cast(_Pair, conv.stride),
            padding=cast("str | _Pair", conv.padding),
            dilation=cast(_Pair, conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ),
        conv,
    )


def _copy_linear(linear: nn.Linear) -> nn.Linear:
    return _with_state(nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None), linear)


def _pool(pool: nn.Module) -> nn.Module:
    """The plain torch pooling a SpikingJelly pooling layer subclasses, with its arguments."""
    base = next(c for c in type(pool).__mro__ if c in _POOLS)
    return base(**{arg: getattr(pool, arg) for arg in _POOLS[base]})


def _convert(module: nn.Module, where: str, like: Optional[Tensor], learnable_decay: bool) -> nn.Module:
    """The esdsnn counterpart of one module (its children converted too); ``like``: a tensor of
    the model's float type and device."""
    name = type(module).__name__
    if hasattr(module, "surrogate_function") or name in ("IFNode", "LIFNode", "ParametricLIFNode"):
        return _neuron(module, where, like, learnable_decay)
    if isinstance(module, nn.Conv2d):
        return _copy_conv(module)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _copy_norm(module)
    if isinstance(module, nn.Linear):
        return _copy_linear(module)
    if isinstance(module, tuple(_POOLS)):
        return _pool(module)
    if isinstance(module, nn.Flatten):
        return nn.Flatten(module.start_dim, module.end_dim)
    if _is_spikingjelly(module) and name == "Dropout":
        return Dropout(float(cast(Any, module).p))  # (SpikingJelly's dropout keeps p as a plain float)
    twin = zoo_builder(module)  # a network or block of SpikingJelly's model zoo
    container = _is_spikingjelly(module) and name == "SeqToANNContainer"
    if _is_spikingjelly(module) and twin is None and not container:
        raise ConfigError(
            f"{_at(where, module)}: SpikingJelly module {name} is not supported; esdsnn converts "
            f"neuron.LIFNode, IFNode, ParametricLIFNode, layer.Conv2d, BatchNorm1d/2d, Linear, pooling, "
            f"Flatten, Dropout, SeqToANNContainer and the networks of activation_based.model's "
            f"spiking_resnet, sew_resnet and spiking_vgg"
        )
    children = {
        child_name: _convert(child, _child(where, child_name), like, learnable_decay)
        for child_name, child in module.named_children()
    }
    if container:
        return nn.Sequential(*children.values())
    if twin is not None:
        return twin(module, children).train(module.training)
    for child_name, child in children.items():  # a container or the user's own module
        setattr(module, child_name, child)
    return module


def from_spikingjelly(model: nn.Module, *, learnable_decay: bool = True) -> nn.Module:
    """The esdsnn version of a SpikingJelly model (a new module; ``model`` is left as it is).

    ``learnable_decay=False``: a ``ParametricLIFNode`` becomes a LIF whose decay is fixed at its
    current value (what the RateBP-based methods can train); by default it stays learnable
    (trained by the BPTT-based methods)."""
    like = next((t for t in model.state_dict().values() if t.is_floating_point()), None)
    converted = _convert(copy.deepcopy(model), "", like, learnable_decay)
    if not any(isinstance(m, LIF) for m in converted.modules()):
        raise ConfigError("the model has no SpikingJelly neuron (LIFNode, IFNode or ParametricLIFNode) to convert")
    return converted


__all__ = ["from_spikingjelly"]
