"""A training method is an ``nn.Module``: it chooses the pass and returns a loss record."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distill.branches import build_branches_for, build_named_branches
from ..distill.esd_loss import DistillConfig, esd_loss
from ..errors import ConfigError, notice
from ..layers.convert import rate_safe_
from ..models.anatomy import probe
from ..models.base import SpikingNet
from ..neurons.lif import LIF
from ..runtime.context import MemorySaving
from ..runtime.trace import Trace


@dataclass
class MethodOutput:
    """What one training step produced.

    ``loss``: the scalar to backpropagate (already times the loss scale). ``logits``: the main head
    of the training pass ``[B, K]``. ``parts``: unscaled values for logging (``loss``, ``ce_main``,
    ``acc_main``; with branches ``ce_branches``, ``kd``, ``teacher_frac`` and ``acc_head{i}``;
    ``firing_rate``, the mean spike rate of all neurons in the step, for spiking methods).
    """

    loss: Tensor
    logits: Tensor
    parts: dict[str, float] = field(default_factory=dict)


class TrainingMethod(nn.Module):
    """Common part: optional ESD branches, the loss, the loss scale. Subclasses define the pass."""

    #: RateBP-based methods scale their loss by 1/T under ``loss_scale="auto"`` (SPEC §3).
    scales_loss_by_T: bool = False
    #: Set by :meth:`prepare_distributed`: makes the KD means global (see ``esd_loss``).
    reduce_teacher_counts: Optional[Callable[[Tensor], Tensor]] = None
    #: How the passes save memory (every switch gives the same results; see ``MemorySaving``).
    memory: MemorySaving = MemorySaving()

    def __init__(
        self,
        model: nn.Module,
        T: int,
        *,
        loss_scale: Union[str, float] = "auto",
        distill: Optional[DistillConfig] = None,
        input_shape: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(T, int) or T < 1:
            raise ConfigError(f"T must be an integer >= 1, got {T!r}")
        self.model = model
        self.T = T
        self.distill = distill
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.branches: Optional[nn.ModuleList]
        self.branch_taps: list[str]
        self.branches, self.branch_taps = (None, []) if distill is None else self._branches(distill)
        if loss_scale == "auto":
            self.loss_scale = 1.0 / T if self.scales_loss_by_T else 1.0
        else:
            try:
                self.loss_scale = float(loss_scale)
            except (TypeError, ValueError):
                raise ConfigError(f"loss_scale must be 'auto' or a positive number, got {loss_scale!r}") from None
            if not self.loss_scale > 0:
                raise ConfigError(f"loss_scale must be 'auto' or a positive number, got {loss_scale!r}")

    def _branches(self, distill: DistillConfig) -> tuple[nn.ModuleList, list[str]]:
        """The ESD branches and the names of the stages they read: those named in the config, or
        a :class:`SpikingNet`'s declared branch points."""
        model = self.model
        if distill.stages:
            return build_named_branches(model, distill.stages, self.input_shape), list(distill.stages)
        if isinstance(model, SpikingNet):
            names = model.stage_names()
            return build_branches_for(model), [names[p] for p in model.branch_points]
        candidates = probe(model, self.input_shape).branch_stages()
        raise ConfigError(
            f"ESD branches need the stages they read: name them (stages=[...] / --stages), e.g. among the "
            f"spiking feature maps of this model before its last one: {', '.join(candidates[:20]) or 'none found'}"
        )

    def training_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Main logits and the time means of the stages the branches read (``branch_taps``). A
        spiking method also sets ``self.step_firing_rate`` (a 0-d tensor) for the logs."""
        raise NotImplementedError

    step_firing_rate: Optional[Tensor] = None

    def prepare_distributed(self, reduce_counts: Callable[[Tensor], Tensor]) -> None:
        """Make this method's means over samples global before DDP wraps it: ``reduce_counts``
        maps this process's counts to the global count per process (ESD's reliable samples)."""
        self.reduce_teacher_counts = reduce_counts

    def forward(self, x: Tensor, y: Tensor) -> MethodOutput:
        self.step_firing_rate = None
        logits, features = self.training_pass(x)
        parts: dict[str, Tensor] = {}
        if self.branches is None:
            loss = F.cross_entropy(logits, y)
            parts["ce_main"] = loss.detach()
        else:
            heads = [branch(f) for branch, f in zip(self.branches, features)] + [logits]
            reduce = self.reduce_teacher_counts if self.training else None
            assert self.distill is not None  # the branches are built from it
            loss, parts = esd_loss(heads, y, self.distill, reduce)
            for i, z in enumerate(heads[:-1]):
                parts[f"acc_head{i + 1}"] = (z.detach().argmax(-1) == y).float().mean()
        parts["loss"] = loss.detach()
        parts["acc_main"] = (logits.detach().argmax(-1) == y).float().mean()
        if self.step_firing_rate is not None:
            parts["firing_rate"] = self.step_firing_rate
        values = torch.stack([v.float() for v in parts.values()]).tolist()  # one device sync
        return MethodOutput(loss * self.loss_scale, logits, dict(zip(parts, values)))

    def extra_repr(self) -> str:
        return f"T={self.T}, loss_scale={self.loss_scale:.4g}, distill={self.distill}"


def mean_rate(total_spikes: Tensor, count: int) -> Tensor:
    return total_spikes.float() / max(count, 1)


def trace_firing_rate(trace: Trace) -> Optional[Tensor]:
    """The mean spike rate of all neurons a RateBP spike stage recorded (free: the rates are there)."""
    rates = [record.rate for record in trace.neurons.values()]
    if not rates:
        return None
    # (a sum of tensors is a tensor: the 0 it starts from only shows in the type)
    return mean_rate(cast(Tensor, sum(r.float().sum() for r in rates)), sum(r.numel() for r in rates))


class SpikeCounter:
    """Counts the spikes of every LIF of a model during one pass (BPTT: the spikes are tensors
    in the autograd graph; the count is detached), by forward hooks held only inside ``with``."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, LIF)]
        self.total: Optional[Tensor] = None
        self.count = 0

    def _hook(self, module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            spikes = output.detach().sum()
            self.total = spikes if self.total is None else self.total + spikes
            self.count += output.numel()

    def __enter__(self) -> SpikeCounter:
        self.handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def rate(self) -> Optional[Tensor]:
        return None if self.total is None else mean_rate(self.total, self.count)


def require_neurons(model: nn.Module, method: str) -> None:
    """A spiking method on a model without a spiking neuron would train an ANN and call it an SNN."""
    if not any(isinstance(m, LIF) for m in model.modules()):
        raise ConfigError(
            f"{method} trains spiking models, but this model has no esdsnn.layers.LIF neuron "
            f"(a SpikingJelly model: convert it with esdsnn.from_spikingjelly)"
        )


def make_rate_safe(model: nn.Module) -> None:
    """Replace the layers RateBP cannot train as they are (plain BatchNorm, Dropout), one notice each."""
    for line in rate_safe_(model):
        notice(f"RateBP: {line} (the rate-aware layer, with the same state)")
