"""Surrogate gradients: the smooth derivative ``σ'`` that stands in for the Heaviside's.

The spikes themselves are the neuron's :func:`~esdsnn.neurons.step.fire` (the one threshold test).
One surrogate object serves both training passes: BPTT's differentiable spike
(:func:`~esdsnn.neurons.step.fire_with_surrogate`) has :meth:`derivative` as its backward and the
fused BPTT node and RateBP's eligibilities call :meth:`derivative_` (the same function, computed in
place in a scratch buffer). A second surrogate is one more class with these two methods, and BPTT
and RateBP cannot disagree about it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class Surrogate(Protocol):
    """What a neuron needs of a surrogate: the derivative ``σ'(v)`` of the distance ``v = h − θ``."""

    alpha: float

    def derivative(self, v: Tensor) -> Tensor: ...

    def derivative_(self, v: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class _SurrogateBase:
    """A steepness ``alpha`` > 0; subclasses define the derivative."""

    alpha: float

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"surrogate alpha must be > 0, got {self.alpha}")

    def derivative(self, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative_(self, v: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class SigmoidSurrogate(_SurrogateBase):
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
class AtanSurrogate(_SurrogateBase):
    """Arctangent surrogate (SpikingJelly's ``surrogate.ATan``; default alpha = 2):
    ``σ'(v) = (α/2) / (1 + (π/2·α·v)²)``."""

    alpha: float = 2.0

    def derivative(self, v: Tensor) -> Tensor:
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * v).pow(2))

    def derivative_(self, v: Tensor) -> Tensor:
        return v.mul_(math.pi / 2 * self.alpha).square_().add_(1.0).reciprocal_().mul_(self.alpha / 2)


#: The surrogates by name (``LIFConfig.surrogate``).
SURROGATES: dict[str, type] = {"sigmoid": SigmoidSurrogate, "atan": AtanSurrogate}
