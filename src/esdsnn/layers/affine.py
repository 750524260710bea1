"""A fixed elementwise affine map ``x·scale + shift``: how a converted SpikingJelly neuron keeps
its own charge equation (``decay_input`` scales and shifts the input current). It is linear, so
RateBP's rate stage applies it to the rates exactly as the spike stage applies it to each step."""

from __future__ import annotations

from torch import Tensor, nn


class Affine(nn.Module):
    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x: Tensor) -> Tensor:
        out = x * self.scale
        return out + self.shift if self.shift != 0.0 else out

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, shift={self.shift:.6g}"
