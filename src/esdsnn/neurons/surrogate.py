"""Surrogate gradients: the Heaviside spike forward, a smooth derivative backward.

One surrogate object serves both training passes: BPTT differentiates :meth:`spike`, whose
backward is :meth:`derivative`; RateBP's eligibilities call :meth:`derivative_` (the same
function, computed in place in the spike stage's scratch buffer). A second surrogate is one more
class with these three methods, and BPTT and RateBP cannot disagree about it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import math

import torch
from torch import Tensor


class Surrogate(Protocol):
    """What a neuron needs of a surrogate: spikes with a gradient, and the derivative itself."""

    alpha: float

    def spike(self, v: Tensor) -> Tensor: ...

    def derivative(self, v: Tensor) -> Tensor: ...

    def derivative_(self, v: Tensor) -> Tensor: ...


class _HeavisideWithSurrogate(torch.autograd.Function):
    """``H(v)`` forward with ``H(0) = 1``; ``surrogate.derivative(v)`` backward."""

    @staticmethod
    def forward(ctx, v: Tensor, surrogate: Surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(v)
        ctx.surrogate = surrogate
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (v,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(v), None


@dataclass(frozen=True)
class _HeavisideSurrogate:
    """Spikes ``H(v)`` forward, :meth:`derivative` backward; subclasses define the derivative."""

    alpha: float

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {self.alpha}")

    def spike(self, v: Tensor) -> Tensor:
        """Spikes ``H(v)`` of the distance to threshold ``v = h − θ``, differentiable."""
        return _HeavisideWithSurrogate.apply(v, self)

    def derivative(self, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class SigmoidSurrogate(_HeavisideSurrogate):
    """Sigmoid surrogate with steepness ``alpha`` (SPEC §2: alpha = 4):
    ``σ'(v) = α·g·(1 − g)``, ``g = sigmoid(α·v)``."""

    alpha: float = 4.0

    def derivative(self, v: Tensor) -> Tensor:
        """``σ'(v)`` (no autograd needed)."""
        g = torch.sigmoid(self.alpha * v)
        return self.alpha * g * (1.0 - g)

    def derivative_(self, v: Tensor) -> Tensor:
        """``σ'(v)`` written over ``v`` (no other buffer)."""
        g = v.mul_(self.alpha).sigmoid_()
        return g.addcmul_(g, g, value=-1.0).mul_(self.alpha)


@dataclass(frozen=True)
class AtanSurrogate(_HeavisideSurrogate):
    """Arctangent surrogate (SpikingJelly's ``surrogate.ATan``; default alpha = 2):
    ``σ'(v) = (α/2) / (1 + (π/2·α·v)²)``."""

    alpha: float = 2.0

    def derivative(self, v: Tensor) -> Tensor:
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * v).pow(2))

    def derivative_(self, v: Tensor) -> Tensor:
        return v.mul_(math.pi / 2 * self.alpha).square_().add_(1.0).reciprocal_().mul_(self.alpha / 2)


#: The surrogates by name (``LIFConfig.surrogate``).
SURROGATES: dict[str, type] = {"sigmoid": SigmoidSurrogate, "atan": AtanSurrogate}
