"""Which pass is running: set by the pass runners, read by the few pass-aware layers.

Each pass kind is named after the runner that sets it (``run_spike``, ``run_bptt``,
``run_spike_stage``, ``run_rate_stage``). Only the pass-aware layers (the LIF neuron, the
rate-aware BatchNorm, the step-wise convolution, the residual add, the SEW connection) read the
current :class:`PassState`; runners set it with :func:`use_pass`, which restores the previous
state in ``finally``. There are no mode flags on modules and nothing sniffs grad mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Optional, overload

import torch

from .static import StaticSteps
from .trace import Trace

PassKind = Literal["spike", "bptt", "spike_stage", "rate_stage"]
PASS_KINDS: tuple[str, ...] = ("spike", "bptt", "spike_stage", "rate_stage")
NO_GRAD_KINDS: tuple[str, ...] = ("spike", "spike_stage")


@dataclass(frozen=True)
class MemorySaving:
    """How the passes save memory and work; every switch gives the same results (tested), so they
    exist to verify that and to debug, not to tune.

    ``compact_spikes``: in the no-grad passes neurons return their spikes as 1-byte
    :class:`~esdsnn.neurons.spikes.PackedSpikes` (any consumer reads them as floats); on half-type
    activations (``bf16-mixed``) they return them in that 2-byte type, which the next convolution
    reads as it is.
    ``inplace_norm``: in the spike stage a BatchNorm fed by a convolution normalises the
    convolution's fresh output in place. ``inplace_residual``: residual sums are written into
    the (fresh) BatchNorm output instead of a third tensor. ``static_input``: for direct-encoded
    images (the same at every step) the first convolution and BatchNorm compute on one copy
    instead of T (:mod:`esdsnn.runtime.static`; equal to float rounding of the statistics, the
    others bit for bit).
    """

    compact_spikes: bool = True
    inplace_norm: bool = True
    inplace_residual: bool = True
    static_input: bool = True


@dataclass(frozen=True)
class PassState:
    """The running pass.

    ``kind``: ``spike`` (inference: T steps, no autograd), ``bptt`` (the same T steps under
    autograd), ``spike_stage`` (RateBP's first stage: T steps, no autograd, neurons and norms
    write to ``trace``), ``rate_stage`` (RateBP's second stage: one step on rates, layers read
    ``trace``). ``steps``: time steps folded into the batch dimension of every activation.
    ``static``: the activations known to repeat one step (the direct-encoded input), or ``None``.
    ``spike_dtype``: the type of the no-grad passes' convolutions on spikes (``None``: the
    weights' own; see :mod:`esdsnn.runtime.precision`).
    """

    kind: PassKind
    steps: int
    trace: Optional[Trace] = None
    memory: MemorySaving = field(default_factory=MemorySaving)
    static: Optional[StaticSteps] = None
    spike_dtype: Optional[torch.dtype] = None

    def __post_init__(self) -> None:
        if self.kind not in PASS_KINDS:
            raise ValueError(f"unknown pass kind {self.kind!r}; one of {', '.join(PASS_KINDS)}")
        if self.kind in ("spike_stage", "rate_stage") and self.trace is None:
            raise ValueError(f"the {self.kind} pass needs a trace")

    @property
    def no_grad(self) -> bool:
        """Whether this pass runs without autograd (so layers may work in place)."""
        return self.kind in NO_GRAD_KINDS


_current: ContextVar[Optional[PassState]] = ContextVar("esdsnn_pass", default=None)


@contextmanager
def use_pass(state: PassState) -> Iterator[PassState]:
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)


@overload
def current_pass(required: Literal[True] = ...) -> PassState: ...
@overload
def current_pass(required: bool) -> Optional[PassState]: ...
def current_pass(required: bool = True) -> Optional[PassState]:
    """The running pass; raises if none runs and ``required`` (a spiking layer called bare)."""
    state = _current.get()
    if state is None and required:
        raise RuntimeError(
            "a spiking layer was called outside a pass: run models through esdsnn.predict(model, x, T) "
            "or a training method (esdsnn.create_method), not model(x)"
        )
    return state
