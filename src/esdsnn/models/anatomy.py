"""What a model looks like inside, found by one dry run: every submodule's output shape, which
outputs are spikes, the last spatial layer and the number of classes.

Branches on named stages, the teacher's attention map and exports all need facts a plain
``nn.Module`` does not declare. :func:`probe` runs the spike pass once (eval mode, no autograd,
one step, two samples of random input from a private generator, so no state and no global RNG
changes) with forward hooks that record them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.sew import SpikeElementWise
from ..neurons.lif import LIF
from ..neurons.spikes import PackedSpikes
from ..passes.spike import run_spike
from .base import SpikingNet

DEFAULT_SIZE = 32  # the side of the probing image when no input shape is given


@dataclass(frozen=True)
class Output:
    """One submodule's output in the dry run: its shape per sample, and whether it is spikes (or a
    SEW connection's function of spikes, whose time mean RateBP's rate stage also gives exactly)."""

    name: str
    shape: tuple[int, ...]
    spiking: bool
    leaf: bool
    order: int  # position among the outputs, in execution order


@dataclass
class Anatomy:
    input_shape: tuple[int, ...]
    outputs: dict[str, Output]
    num_classes: int
    neurons: int  # LIF layers

    def last_spatial(self) -> Optional[Output]:
        """The last leaf layer whose output is a feature map ``[C, H, W]`` larger than 1×1 (a
        global pooling's output does not count), or the last 1×1 one if there is no other."""
        maps = [o for o in self.outputs.values() if o.leaf and len(o.shape) == 3]
        wide = [o for o in maps if o.shape[1] * o.shape[2] > 1]
        return max(wide or maps, key=lambda o: o.order) if maps else None

    def branch_stages(self) -> list[str]:
        """The outputs an ESD branch can read: spiking feature maps ``[C, H, W]`` that come
        before the last spatial layer (a branch on the last feature map would only repeat the
        main head's input), in execution order."""
        last = self.last_spatial()
        if last is None:
            return []
        ok = [o for o in self.outputs.values() if o.spiking and len(o.shape) == 3 and o.order < last.order]
        return [o.name for o in sorted(ok, key=lambda o: o.order)]


def in_channels_of(model: nn.Module) -> Optional[int]:
    """The input channels of the first convolution of ``model`` (None if it has none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    return None if first is None else int(first.in_channels)


def _dry_input(model: nn.Module, input_shape: Optional[Sequence[int]], samples: int = 2) -> Tensor:
    """Random input for a dry run: ``samples`` images of ``input_shape`` (default: the first
    convolution's channels at 32×32), from a private generator, on the model's device and dtype."""
    if input_shape is None:
        channels = in_channels_of(model)
        if channels is None:
            raise ConfigError("cannot tell the model's input shape (it has no convolution): pass input_shape=(C, H, W)")
        input_shape = (channels, DEFAULT_SIZE, DEFAULT_SIZE)
    x = torch.rand((samples, *(int(s) for s in input_shape)), generator=torch.Generator().manual_seed(0))
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    return x if ref is None else x.to(ref.device, ref.dtype)


def _dry_run(model: nn.Module, x: Tensor, steps: int) -> Tensor:
    """The spike pass on ``x`` in eval mode (the mode restored after); a model that fails on it
    is a :class:`ConfigError` naming the input shape, one that returns something other than
    logits gets the line of :func:`~esdsnn.passes.readout.output_problem`."""
    was_training = model.training
    model.eval()
    try:
        return run_spike(model, x, steps)
    except ConfigError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"the model does not run on input of shape {tuple(x.shape[1:])} "
            f"({' '.join(str(exc).split())[:200]}); pass input_shape=(C, H, W)"
        ) from None
    finally:
        model.train(was_training)


def probe(model: nn.Module, input_shape: Optional[Sequence[int]] = None) -> Anatomy:
    """Dry-run ``model`` on two random samples of ``input_shape`` ``(C, H, W)`` (default: the
    first convolution's channels at 32×32) and record its :class:`Anatomy`."""
    x = _dry_input(model, input_shape)
    outputs: dict[str, Output] = {}
    sew: list[Tensor] = []  # SEW connections' outputs (held, so that no other tensor takes their identity)

    def record(name: str, leaf: bool):
        def hook(module: nn.Module, inputs, out) -> None:
            if isinstance(module, SpikeElementWise):
                sew.append(out)
            if isinstance(out, Tensor) and name not in outputs:
                spiking = isinstance(out, PackedSpikes) or any(out is s for s in sew)
                outputs[name] = Output(name, tuple(out.shape[1:]), spiking, leaf, len(outputs))

        return hook

    handles = [
        m.register_forward_hook(record(n, not any(True for _ in m.children()))) for n, m in model.named_modules() if n
    ]
    try:
        logits = _dry_run(model, x, 1)
    finally:
        for handle in handles:
            handle.remove()
    neurons = sum(isinstance(m, LIF) for m in model.modules())
    return Anatomy(tuple(x.shape[1:]), outputs, int(logits.shape[-1]), neurons)


def check_output_contract(model: nn.Module, input_shape: Optional[Sequence[int]] = None) -> None:
    """Check, by one dry run at 2 time steps, that ``model`` returns logits ``[T·B, K]`` on the
    folded activations (not a tuple, not a feature map, not an output it averaged over T
    itself), so that a run stops before training with one line rather than at its first step."""
    _dry_run(model, _dry_input(model, input_shape), 2)


def feature_map_and_classifier(
    model: nn.Module, input_shape: Optional[Sequence[int]] = None
) -> tuple[str, list[nn.Linear]]:
    """The name of the module whose output is the model's last feature map, and the linear layers
    after it (its classifier): a :class:`SpikingNet`'s last stage and head, else found by a dry run."""
    if isinstance(model, SpikingNet):
        return model.stage_names()[-1], [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    anatomy = probe(model, input_shape)
    last = anatomy.last_spatial()
    if last is None:
        raise ConfigError("the model has no feature map ([C, H, W] output) to build an attention map from")
    modules = dict(model.named_modules())
    linears = [
        modules[n]
        for n, o in anatomy.outputs.items()
        if o.leaf and o.order > last.order and isinstance(modules[n], nn.Linear)
    ]
    return last.name, linears


__all__ = ["Anatomy", "Output", "check_output_contract", "feature_map_and_classifier", "in_channels_of", "probe"]
