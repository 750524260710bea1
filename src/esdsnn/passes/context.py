"""Which pass is running: set by the pass runners, read by the few pass-aware layers.

Only two layer kinds depend on the pass (the LIF neuron and the RateBP-aware BatchNorm); they read
the current :class:`PassState`. Runners set it with :func:`use_pass`, which restores the previous
state in ``finally``. There are no global mode flags on modules and nothing sniffs grad mode.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Literal, Optional

from .trace import Trace

PassKind = Literal["spike", "infer", "record", "rate"]


@dataclass(frozen=True)
class PassState:
    """The running pass.

    ``kind``: ``spike`` (BPTT: T steps under autograd), ``infer`` (the same T steps without
    autograd, lean and in place),
    ``record`` (RateBP spike stage: T steps, no grad, neurons and norms write to ``trace``),
    ``rate`` (RateBP rate stage: one step on rates, layers read ``trace``).
    ``steps``: time steps folded into the batch dimension of every activation (T, or 1).
    """

    kind: PassKind
    steps: int
    trace: Optional[Trace] = None


_current: ContextVar[Optional[PassState]] = ContextVar("esdsnn_pass", default=None)


@contextmanager
def use_pass(state: PassState) -> Iterator[PassState]:
    token = _current.set(state)
    try:
        yield state
    finally:
        _current.reset(token)


def current_pass(required: bool = True) -> Optional[PassState]:
    """The running pass; raises if none runs and ``required`` (a spiking layer called bare)."""
    state = _current.get()
    if state is None and required:
        raise RuntimeError(
            "a spiking layer was called outside a pass: run models through esdsnn.predict(model, x, T) "
            "or a training method (esdsnn.create_method), not model(x)"
        )
    return state
