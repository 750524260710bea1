"""Surrogate gradients: the Heaviside spike forward, a smooth derivative backward.

One surrogate object serves BPTT (through :meth:`SigmoidSurrogate.spike`) and RateBP (through
:meth:`SigmoidSurrogate.derivative`, used for eligibilities), so both see the same alpha.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class _HeavisideSigmoidGrad(torch.autograd.Function):
    """``H(v)`` forward with ``H(0) = 1``; ``alpha·g·(1−g)``, ``g = sigmoid(alpha·v)`` backward."""

    @staticmethod
    def forward(ctx, v: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.alpha = alpha
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        g = torch.sigmoid(ctx.alpha * v)
        return grad_out * (ctx.alpha * g * (1.0 - g)), None


@dataclass(frozen=True)
class SigmoidSurrogate:
    """Sigmoid surrogate with steepness ``alpha`` (SPEC §2: alpha = 4)."""

    alpha: float = 4.0

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {self.alpha}")

    def spike(self, v: Tensor) -> Tensor:
        """Spikes ``H(v)`` of the distance to threshold ``v = h − θ``, differentiable."""
        return _HeavisideSigmoidGrad.apply(v, self.alpha)

    def derivative(self, v: Tensor) -> Tensor:
        """The surrogate derivative ``σ'(v)`` itself (no autograd needed)."""
        g = torch.sigmoid(self.alpha * v)
        return self.alpha * g * (1.0 - g)
