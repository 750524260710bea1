"""esdsnn models out, to NIR (the Neuromorphic Intermediate Representation) for hardware and other
frameworks; needs the ``nir`` package (``pip install esdsnn[nir]``).

The model is traced with ``torch.fx`` (esdsnn and torch layers are leaves; residual adds, also
:func:`~esdsnn.layers.add_residual`, become several edges into one node, which NIR sums) and
mapped node by node:

- ``Conv2d`` → ``nir.Conv2d``, ``Linear`` → ``nir.Affine``; a BatchNorm right after one is folded
  into it with its running statistics (``w·γ/√(var+ε)``, ``(b − mean)·γ/√(var+ε) + β``);
- ``LIF`` → ``nir.LIF`` (``nir.IF`` for decay 1). NIR's neurons are continuous,
  ``τ·dv/dt = (v_leak − v) + R·I``; esdsnn's step ``h_t = λ·u_{t−1} + x_t`` is its forward-Euler
  discretisation at the time step the NIR clients default to, ``dt = 1e-4 s`` (SpikingJelly's and
  snnTorch's importers; the graph's metadata says so): ``τ = dt/(1 − λ)``, ``R = τ/dt`` (the input
  gain ``dt/τ·R`` is 1), ``v_leak = 0``; IF: ``dv/dt = R·I`` with ``R = 1/dt``. One graph step is
  one esdsnn step. NIR resets to ``v_reset``: only hard-reset models export (a soft reset is
  refused). esdsnn starts the membrane at ``v_reset``, a NIR client at 0: a ``v_reset ≠ 0`` model
  is written in the shifted membrane ``v = u − v_reset``, which starts at 0, resets to 0, fires at
  ``θ − v_reset`` and leaks towards ``−v_reset`` (an IF does not leak) — exact by NIR's
  definitions, and named per node in the metadata. esdsnn fires at ``h ≥ θ``, NIR at
  ``v > v_threshold``: equal except on the threshold itself;
- average pooling → ``nir.AvgPool2d`` (adaptive pooling with its kernel from the traced shapes;
  a ``SumPool2d`` and a ``Scale`` would serve clients without ``AvgPool2d``, but SpikingJelly's
  and snnTorch's importers have neither), ``Flatten`` → ``nir.Flatten`` (NIR's shapes are one
  sample's, so ``nn.Flatten()`` is ``start_dim=0``), dropout → nothing, an ``Affine`` scale →
  ``nir.Scale``, a SEW ``ADD`` connection → the sum of its inputs (``AND``/``IAND`` are refused).

The graph's output is the last layer's output at every step; esdsnn's readout is its mean over
the T steps (the graph's metadata says so). Anything else is refused by name.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..layers.affine import Affine
from ..layers.conv import Conv2d
from ..layers.dropout import Dropout
from ..layers.rate_norm import RateBatchNorm1d, RateBatchNorm2d
from ..layers.sew import SpikeElementWise
from ..models.anatomy import probe
from ..neurons.lif import LIF

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_LEAVES = (LIF, Conv2d, RateBatchNorm1d, RateBatchNorm2d, Affine, Dropout, SpikeElementWise)
_SKIPPED = (nn.Dropout, Dropout, nn.Identity)
#: The graph's time step in seconds: the default of the NIR clients (SpikingJelly, snnTorch), so
#: that their importers run the file as it comes, one graph step per esdsnn step.
DT = 1e-4


def _nir():
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR export needs the nir package: pip install 'esdsnn[nir]' (or pip install nir)") from None
    return nir


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, name)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _fold(
    weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.modules.batchnorm._BatchNorm, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """A conv/linear followed by BatchNorm (running statistics) as one conv/linear."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(f"{where}: a BatchNorm exports only with running statistics (track_running_stats=True)")
    w = weight.detach().double()
    b = bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(scale)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(scale)
    w = w * (gamma * scale).view(-1, *([1] * (w.dim() - 1)))
    b = (b - bn.running_mean.double()) * gamma * scale + beta
    return w.numpy(), b.numpy()


def _neuron(nir: Any, lif: LIF, shape: tuple[int, ...], where: str) -> tuple[Any, Optional[str]]:
    """The NIR neuron of ``lif`` at ``DT`` (one graph step = one esdsnn step), and a note when its
    membrane is shifted (``v_reset ≠ 0``: the graph's ``v`` is esdsnn's ``u − v_reset``)."""
    p = lif.config
    if p.reset != "hard":
        raise ConfigError(
            f"{where}: NIR neurons reset to v_reset, this model resets by subtraction (soft reset); "
            f"train it with --reset hard (LIF(reset='hard')) to export it"
        )
    ones = np.ones(shape)
    # esdsnn starts the membrane at v_reset, NIR at 0: in v = u − v_reset it starts at 0, resets to 0,
    # fires at θ − v_reset and leaks towards −v_reset (what u's leak towards 0 becomes)
    shift = float(p.v_reset)
    note = f"v = esdsnn's membrane - {shift:g} (v_reset), so that it starts at 0" if shift else None
    decay = float(lif.decay)
    threshold = (p.threshold - shift) * ones
    if decay >= 1.0:
        return nir.IF(r=ones / DT, v_threshold=threshold, v_reset=0 * ones), note
    steps = 1.0 / (1.0 - decay)  # τ in steps; r = τ/dt makes the input gain dt/τ·r = 1
    return nir.LIF(
        tau=steps * DT * ones, r=steps * ones, v_leak=-shift * ones, v_threshold=threshold, v_reset=0 * ones
    ), note


def export_nir(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """The NIR graph of ``model`` for one sample of shape ``input_shape`` ``(C, H, W)`` (BatchNorms
    folded with their running statistics; see the module notes for the mapping)."""
    nir = _nir()
    input_shape = tuple(int(s) for s in input_shape)
    anatomy = probe(model, input_shape)
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:
        raise ConfigError(
            f"the model cannot be traced for export ({' '.join(str(exc).split())[:200]}): its forward "
            f"must only chain submodules and add residuals"
        ) from None
    modules = dict(model.named_modules())
    nodes: dict[str, Any] = {}
    inputs: dict[str, list[str]] = {}  # node name -> names of the graph nodes feeding it
    source: dict[str, list[str]] = {}  # fx node -> the NIR nodes that produce its value
    folded: set[str] = set()
    shifted: dict[str, str] = {}  # neuron node -> how its membrane relates to esdsnn's

    def producers(arg: Any) -> list[str]:
        return [
            name
            for a in (arg if isinstance(arg, (list, tuple)) else [arg])
            if isinstance(a, torch.fx.Node)
            for name in source[a.name]
        ]

    def out_shape(target: str) -> tuple[int, ...]:
        return anatomy.outputs[target].shape

    for node in graph.nodes:
        if node.op == "placeholder":
            nodes["input"] = nir.Input(np.array(input_shape))
            source[node.name] = ["input"]
            continue
        if node.op == "output":
            nodes["output"] = nir.Output(np.array(anatomy_output_shape(anatomy)))
            inputs["output"] = producers(node.args[0])
            continue
        if node.op == "call_function" and node.target in (operator.add, torch.add):
            source[node.name] = producers(node.args[0]) + producers(node.args[1])  # NIR sums its inputs
            continue
        if node.op != "call_module":
            raise ConfigError(
                f"{node.target} in the model's forward has no NIR counterpart (only submodules and "
                f"residual adds export)"
            )
        target, module = node.target, modules[node.target]
        if isinstance(module, SpikeElementWise):
            if module.connect != "ADD":
                raise ConfigError(
                    f"{target}: a SEW {module.connect} connection has no NIR counterpart (a NIR node "
                    f"sums its inputs: of the SEW connections only ADD exports)"
                )
            source[node.name] = producers(node.args[0]) + producers(node.args[1])
            continue
        if isinstance(module, _SKIPPED):
            source[node.name] = producers(node.args[0])
            continue
        if isinstance(module, _NORMS):
            feeding = node.args[0]
            if not (feeding.op == "call_module" and feeding.target in folded and len(feeding.users) == 1):
                raise ConfigError(
                    f"{target}: a BatchNorm exports only folded into the convolution or linear layer right before it"
                )
            source[node.name] = producers(node.args[0])
            key = source[feeding.name][0]
            conv = modules[feeding.target]
            weight, bias = _fold(conv.weight, conv.bias, module, target)
            nodes[key] = _rebuild(nir, conv, weight, bias, nodes[key])
            continue
        name = target
        if isinstance(module, nn.Conv2d):
            in_hw = tuple(_shape_of(node.args[0], anatomy, input_shape)[1:])
            nodes[name] = nir.Conv2d(
                input_shape=in_hw,
                weight=_np(module.weight),
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
                bias=_np(module.bias) if module.bias is not None else np.zeros(module.out_channels),
            )
            folded.add(target)
        elif isinstance(module, nn.Linear):
            bias = _np(module.bias) if module.bias is not None else np.zeros(module.out_features)
            nodes[name] = nir.Affine(weight=_np(module.weight), bias=bias)
            folded.add(target)
        elif isinstance(module, LIF):
            nodes[name], note = _neuron(nir, module, out_shape(target), target)
            if note:
                shifted[name] = note
        elif isinstance(module, nn.AvgPool2d):
            nodes[name] = nir.AvgPool2d(
                kernel_size=np.array(_pair(module.kernel_size)),
                stride=np.array(_pair(module.stride or module.kernel_size)),
                padding=np.array(_pair(module.padding)),
            )
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            _c, h, w = _shape_of(node.args[0], anatomy, input_shape)
            oh, ow = out_shape(target)[1:]
            if h % oh or w % ow:
                raise ConfigError(
                    f"{target}: adaptive pooling from {h}x{w} to {oh}x{ow} is not a plain average pooling"
                )
            kernel = np.array((h // oh, w // ow))
            nodes[name] = nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.array((0, 0)))
        elif isinstance(module, nn.Flatten):
            shape = _shape_of(node.args[0], anatomy, input_shape)
            nodes[name] = nir.Flatten(
                input_type={"input": np.array(shape)},
                start_dim=module.start_dim - 1,
                end_dim=module.end_dim if module.end_dim < 0 else module.end_dim - 1,
            )
        elif isinstance(module, Affine):
            if module.shift != 0.0:
                raise ConfigError(f"{target}: NIR has no elementwise shift (an Affine with shift {module.shift})")
            nodes[name] = nir.Scale(scale=module.scale * np.ones(_shape_of(node.args[0], anatomy, input_shape)))
        else:
            raise ConfigError(
                f"{target} ({type(module).__name__}) has no NIR counterpart; esdsnn exports Conv2d, "
                f"Linear, BatchNorm (folded), LIF, average pooling, Flatten, Dropout and Affine scales"
            )
        inputs[name] = producers(node.args[0])
        source[node.name] = [name]
    edges = [(src, dst) for dst, srcs in inputs.items() for src in srcs]
    metadata = {
        "producer": "esdsnn",
        "dt": DT,
        "time_unit": "s",
        "readout": "mean over the T time steps of the output",
        "discretisation": f"forward Euler at dt = {DT:g} s, one graph step per esdsnn step: LIF tau = dt/(1 - decay), "
        f"r = tau/dt, v_leak = 0; IF r = 1/dt",
        "threshold": "esdsnn fires at h >= v_threshold (NIR: v > v_threshold; equal except on the threshold)",
    }
    if shifted:
        metadata["shifted_membranes"] = shifted
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def anatomy_output_shape(anatomy: Any) -> tuple[int, ...]:
    return (anatomy.num_classes,)


def _shape_of(arg: Any, anatomy: Any, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The per-sample shape of the value an fx node carries (a module's output, or the input)."""
    node = arg
    while node.op == "call_function" or (node.op == "call_module" and node.target not in anatomy.outputs):
        node = node.args[0]
    if node.op == "placeholder":
        return input_shape
    return anatomy.outputs[node.target].shape


def _pair(v: Any) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _rebuild(nir: Any, layer: nn.Module, weight: np.ndarray, bias: np.ndarray, old: Any) -> Any:
    if isinstance(layer, nn.Conv2d):
        return nir.Conv2d(
            input_shape=old.input_shape,
            weight=weight,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            groups=old.groups,
            bias=bias,
        )
    return nir.Affine(weight=weight, bias=bias)


def write_nir(model: nn.Module, input_shape: Sequence[int], path: str) -> Any:
    """Export ``model`` and write the graph to ``path`` (HDF5, ``nir.write``)."""
    graph = export_nir(model, input_shape)
    _nir().write(path, graph)
    return graph


__all__ = ["export_nir", "write_nir"]
