"""The LIF step written once (SPEC §2): its configuration, charge, fire, reset, one differentiable
step, and ``∂u_t/∂h_t`` by reset rule. The loops over time (:mod:`esdsnn.neurons.lif`: the autograd
loop, inference and RateBP's spike stage with its eligibility), the fused BPTT node
(:mod:`esdsnn.neurons.fused`, forward and backward) and their compiled versions all call these; the
surrogate derivative ``σ'`` is written once in :mod:`esdsnn.neurons.surrogate`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from ..fields import check_choices, option
from .surrogate import SURROGATES, Surrogate

ResetMode = Literal["soft", "hard"]
IF_LOGIT = 50.0


@dataclass(frozen=True)
class LIFConfig:
    """Everything that configures a LIF layer; a model takes one for all its layers."""

    decay: float = option(0.2, "membrane decay factor lambda, in (0, 1] (1: integrate-and-fire)")
    threshold: float = option(1.0, "firing threshold")
    reset: ResetMode = option("soft", "reset rule: soft (subtract threshold) or hard (set to v_reset)")
    v_reset: float = option(0.0, "membrane value after a hard reset")
    detach_reset: bool = option(True, "stop the gradient through the reset")
    learnable_decay: bool = option(False, "learn the decay factor (BPTT-based methods)")
    surrogate: Literal["sigmoid", "atan"] = option("sigmoid", "surrogate derivative: sigmoid or atan")
    surrogate_alpha: float = option(4.0, "steepness alpha of the surrogate derivative")

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if self.decay == 1.0 and self.learnable_decay:
            raise ValueError("decay 1 (integrate-and-fire) cannot be learnable: use a decay below 1")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if not self.surrogate_alpha > 0:
            raise ValueError(f"surrogate_alpha must be > 0, got {self.surrogate_alpha}")
        # Built now, not on first use inside a compiled loop: torch.compile cannot trace
        # cached_property's lock (Python < 3.12) and would run the rest of that loop eagerly.
        self.surrogate_fn  # noqa: B018

    @functools.cached_property
    def surrogate_fn(self) -> Surrogate:
        """The surrogate object both BPTT and RateBP's eligibilities use."""
        return SURROGATES[self.surrogate](self.surrogate_alpha)

    def initial_membrane(self, like: Tensor) -> Tensor:
        """``u_0``: 0 for soft reset, ``v_reset`` for hard reset.

        The membrane (and with it the eligibility and rate accumulators) is float32 when the
        activations are float16/bfloat16 (mixed precision): threshold tests and the leaky sum stay
        exact to float32, only the spikes (exactly 0 or 1) are stored in the activations' type.
        """
        dtype = torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype
        if self.reset == "hard" and self.v_reset != 0.0:
            return torch.full_like(like, self.v_reset, dtype=dtype)
        return torch.zeros_like(like, dtype=dtype)


# ---- the step ---------------------------------------------------------------------------------
# Each step function has an ``out=`` form for the in-place loops (``out`` may be an input whose
# value is dead after the call: the membrane ``u`` for the charge, ``h`` for the reset): the loops
# allocate nothing per step, and every function stays a pure function of tensors for torch.compile.
def charge(u: Tensor, x: Tensor, decay: Tensor | float, *, out: Tensor | None = None) -> Tensor:
    """``h = λ·u + x`` (into ``out`` if given)."""
    return decay * u + x if out is None else torch.mul(u, decay, out=out).add_(x)


def fire(h: Tensor, p: LIFConfig, *, out: Tensor | None = None) -> Tensor:
    """Spikes ``s = H(h − θ)`` with ``H(0) = 1``: 1 where ``h ≥ θ`` (a neuron fires *at* its
    threshold), else 0; in ``h``'s dtype, or into ``out`` (any dtype: uint8 for packed spikes).
    The one threshold test of every loop, the fused node and :func:`fire_with_surrogate`."""
    return torch.ge(h, p.threshold, out=torch.empty_like(h) if out is None else out)


def reset(h: Tensor, s: Tensor, p: LIFConfig, *, out: Tensor | None = None) -> Tensor:
    """The next membrane from ``h`` and the spikes ``s``: soft ``h − θ·s``, hard
    ``h·(1 − s) + v_reset·s`` (into ``out`` if given; ``θ·s`` and ``v_reset·s`` are exact, so
    every form rounds alike)."""
    if out is None:
        return h - p.threshold * s if p.reset == "soft" else h * (1.0 - s) + p.v_reset * s
    if p.reset == "soft":
        return torch.sub(h, s, alpha=p.threshold, out=out)
    torch.mul(h, 1.0 - s, out=out)
    return out.add_(s, alpha=p.v_reset) if p.v_reset != 0.0 else out


class _FireWithSurrogate(torch.autograd.Function):
    """:func:`fire` forward; the surrogate derivative ``σ'(h − θ)`` backward."""

    @staticmethod
    def forward(ctx, h: Tensor, p: LIFConfig) -> Tensor:
        ctx.save_for_backward(h)
        ctx.p = p
        return fire(h, p)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (h,) = ctx.saved_tensors
        return grad_out * ctx.p.surrogate_fn.derivative(h - ctx.p.threshold), None


def fire_with_surrogate(h: Tensor, p: LIFConfig) -> Tensor:
    """Spikes :func:`fire` with the surrogate gradient: what BPTT differentiates."""
    return _FireWithSurrogate.apply(h, p)


def lif_step(x: Tensor, u: Tensor, decay: Tensor | float, p: LIFConfig) -> tuple[Tensor, Tensor]:
    """One differentiable LIF step: returns ``(spike, next_membrane)``."""
    h = charge(u, x, decay)
    s = fire_with_surrogate(h, p)
    return s, reset(h, s.detach() if p.detach_reset else s, p)


def membrane_derivative(s: Optional[Tensor], h: Tensor, sg: Tensor, p: LIFConfig) -> Tensor | float:
    """``∂u_t/∂h_t`` by the reset rule (SPEC §3 table); ``sg`` is ``σ'(h_t − θ)``. Only the hard
    reset reads the spikes ``s`` (the soft reset's callers may pass ``None``)."""
    if p.reset == "soft":
        return 1.0 if p.detach_reset else 1.0 - p.threshold * sg
    assert s is not None, "the hard reset's derivative reads the spikes"
    if p.detach_reset:
        return 1.0 - s
    return 1.0 - s + (p.v_reset - h) * sg
