"""The baseline of ``esdsnn bench --baseline spikingjelly``: the same network on SpikingJelly layers.

:func:`to_spikingjelly` rebuilds an esdsnn model with SpikingJelly's multi-step layers
(``layer.Conv2d``, ``layer.BatchNorm2d``, ``layer.Linear``, pooling, ``layer.Flatten``) and
neurons: a LIF becomes ``neuron.LIFNode`` with ``τ = 1/(1 − decay)``, ``decay_input=False``, the
same threshold, reset (``v_reset=None`` for the soft one), ``detach_reset`` and surrogate, so it
computes what esdsnn's BPTT computes (tested). The containers (a ResNet block's forward, the stem,
stages and head) are kept: their code only chains submodules and adds residuals, which works on
SpikingJelly's ``[T, B, ...]`` tensors as it does on esdsnn's folded ones. A layer without a
counterpart is refused in one line.

SpikingJelly 2.0.0 is what ``pip install spikingjelly`` gives users today (an optional extra of
esdsnn, installed with ``--no-deps`` plus its light dependencies); the bench runs whichever
version its worker imports and records it (``baseline``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..neurons.lif import LIF

INSTALL_HINT = (
    "install it with: pip install --no-deps spikingjelly==2.0.0 loguru "
    "(or put a directory holding it on ESDSNN_SPIKINGJELLY_PATH)"
)


def spikingjelly_modules() -> tuple[Any, Any, Any, Any]:
    """SpikingJelly's ``(layer, neuron, surrogate, functional)`` modules; a ConfigError if absent."""
    try:
        from spikingjelly.activation_based import functional, layer, neuron, surrogate
    except ImportError as exc:
        raise ConfigError(f"the SpikingJelly baseline needs spikingjelly ({exc}); {INSTALL_HINT}") from None
    return layer, neuron, surrogate, functional


def spikingjelly_version() -> str:
    """The installed SpikingJelly's version (its package metadata, else its ``__version__``)."""
    import spikingjelly

    try:
        from importlib.metadata import version

        return version("spikingjelly")
    except Exception:  # no metadata next to the package
        return str(getattr(spikingjelly, "__version__", "unknown"))


def _neuron(lif: LIF, neuron: Any, surrogate: Any) -> nn.Module:
    p = lif.config
    decay = float(lif.decay)
    if decay >= 1.0 or lif.learnable_decay:
        raise ConfigError("the SpikingJelly baseline takes LIF layers with a fixed decay below 1")
    surrogates = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan}
    return neuron.LIFNode(
        tau=float(1.0 / (1.0 - decay)),
        decay_input=False,
        v_threshold=float(p.threshold),
        v_reset=None if p.reset == "soft" else float(p.v_reset),
        detach_reset=p.detach_reset,
        surrogate_function=surrogates[p.surrogate](alpha=p.surrogate_alpha),
        step_mode="m",
    )


def _with_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with ``old``'s parameters and buffers, in their float type and on their device."""
    state = old.state_dict()
    first = next(v for v in state.values() if v.is_floating_point())
    new = new.to(first.device, first.dtype)
    new.load_state_dict(state)
    return new


def _leaf(module: nn.Module, where: str, sj: tuple[Any, Any, Any, Any]) -> nn.Module | None:
    """The SpikingJelly counterpart of one esdsnn/torch layer (``None``: keep the module)."""
    from ..neurons.lif import LIF

    layer, neuron, surrogate, _ = sj
    if isinstance(module, LIF):
        return _neuron(module, neuron, surrogate)
    if isinstance(module, nn.Conv2d):
        conv = module
        return _with_state(
            layer.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups,
                conv.bias is not None,
                conv.padding_mode,
                step_mode="m",
            ),
            conv,
        )
    if isinstance(module, nn.BatchNorm2d):
        bn = module
        return _with_state(
            layer.BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, step_mode="m"),
            bn,
        )
    if isinstance(module, nn.Linear):
        fc = module
        return _with_state(layer.Linear(fc.in_features, fc.out_features, fc.bias is not None, step_mode="m"), fc)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return layer.AdaptiveAvgPool2d(module.output_size, step_mode="m")
    if isinstance(module, nn.AvgPool2d):
        return layer.AvgPool2d(module.kernel_size, module.stride, module.padding, step_mode="m")
    if isinstance(module, nn.MaxPool2d):
        return layer.MaxPool2d(module.kernel_size, module.stride, module.padding, step_mode="m")
    if isinstance(module, nn.Flatten):
        return layer.Flatten(module.start_dim, module.end_dim, step_mode="m")
    if isinstance(module, nn.Identity):
        return None
    if not list(module.children()):
        raise ConfigError(f"{where} ({type(module).__name__}) has no SpikingJelly counterpart in the baseline")
    return None


def to_spikingjelly(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on SpikingJelly multi-step layers, with the same weights and settings;
    it maps ``[T, B, ...]`` to ``[T, B, K]`` (see the module notes)."""
    sj = spikingjelly_modules()
    net = copy.deepcopy(model)

    def convert(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            where = f"{prefix}{name}"
            new = _leaf(child, where, sj)
            if new is not None:
                setattr(parent, name, new)
            else:
                convert(child, where + ".")

    convert(net, "")
    return net


def spikingjelly_training_step(
    model: nn.Module, x: Tensor, y: Tensor, T: int, precision: str = "32"
) -> tuple[Callable[[], None], dict]:
    """One BPTT training step of the SpikingJelly twin of ``model``, as esdsnn's BPTT method takes
    it: the image at every step (or the event frames), cross-entropy of the time-averaged logits,
    backward, SGD with momentum; the neurons' state reset after each step (SpikingJelly keeps it
    on the modules). Under ``precision`` the forward runs in the same autocast as esdsnn's (and
    a gradient scaler for 16-mixed). Returns the step and what the record says about the baseline."""
    from ..runtime.precision import autocast_for, precision_spec, use_precision

    _, _, _, functional = spikingjelly_modules()
    net = to_spikingjelly(model).train()
    x_seq = x if x.dim() == 5 else x.unsqueeze(0).repeat(T, *([1] * x.dim()))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(x.device.type, enabled=precision_spec(precision).grad_scaler)

    def step() -> None:
        with use_precision(precision):  # float32 without TF32 under "32", as esdsnn's own step
            opt.zero_grad(set_to_none=True)
            with autocast_for(precision, x.device):
                logits = net(x_seq).mean(0)
                loss = nn.functional.cross_entropy(logits.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        functional.reset_net(net)

    return step, {"baseline": f"spikingjelly {spikingjelly_version()}"}


__all__ = ["spikingjelly_training_step", "spikingjelly_version", "to_spikingjelly"]
