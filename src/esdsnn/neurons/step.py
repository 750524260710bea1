"""The LIF step written once (SPEC §2): its configuration, charge, reset, one differentiable step,
and ``∂u_t/∂h_t`` by reset rule. The loops over time (:mod:`esdsnn.neurons.lif`), the fused BPTT
node (:mod:`esdsnn.neurons.fused`) and RateBP's eligibility all call these.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

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
def charge(u: Tensor, x: Tensor, decay: Tensor | float, *, inplace: bool = False) -> Tensor:
    """``h = λ·u + x`` (``inplace``: into ``u``'s storage, which is dead after the charge)."""
    return u.mul_(decay).add_(x) if inplace else decay * u + x


def reset(h: Tensor, s: Tensor, p: LIFConfig, *, inplace: bool = False) -> Tensor:
    """The next membrane from ``h`` and the spikes ``s`` (``inplace``: overwrites ``h``)."""
    if p.reset == "soft":
        if not inplace:
            return h - p.threshold * s
        return h.sub_(s) if p.threshold == 1.0 else h.sub_(s, alpha=p.threshold)
    if not inplace:
        return h * (1.0 - s) + p.v_reset * s
    return h.mul_(1.0 - s).add_(s, alpha=p.v_reset) if p.v_reset != 0.0 else h.mul_(1.0 - s)


def lif_step(x: Tensor, u: Tensor, decay: Tensor | float, p: LIFConfig) -> tuple[Tensor, Tensor]:
    """One differentiable LIF step: returns ``(spike, next_membrane)``."""
    h = charge(u, x, decay)
    s = p.surrogate_fn.spike(h - p.threshold)
    return s, reset(h, s.detach() if p.detach_reset else s, p)


def membrane_derivative(s: Tensor, h: Tensor, sg: Tensor, p: LIFConfig) -> Tensor | float:
    """``∂u_t/∂h_t`` by the reset rule (SPEC §3 table); ``sg`` is ``σ'(h_t − θ)``."""
    if p.reset == "soft":
        return 1.0 if p.detach_reset else 1.0 - p.threshold * sg
    if p.detach_reset:
        return 1.0 - s
    return 1.0 - s + (p.v_reset - h) * sg
