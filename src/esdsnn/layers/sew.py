"""Spike-element-wise connections (SEW ResNet, Fang et al. 2021): a residual block's output is a
function ``g(x, y)`` of two spike maps instead of a neuron after a sum. The three of SpikingJelly's
``sew_function(x, y, cnf)``: ``ADD`` ``x + y``, ``AND`` ``x·y``, ``IAND`` ``x·(1 − y)`` (its
BasicBlock passes ``(shortcut, branch)``, its Bottleneck ``(branch, shortcut)``).

In each pass:

- spike pass and RateBP's spike stage (no autograd): on each step's spikes; ``AND``/``IAND`` of
  packed spikes are bitwise operations on their bytes and stay packed; ``ADD`` gives counts
  (0, 1, 2: floats, not spikes);
- BPTT: the formula under autograd (SpikingJelly's own derivative);
- RateBP's rate stage: ``ADD`` is linear, so it is exact on rates. ``AND``/``IAND`` are products,
  and the rate of a product is not the product of the rates (the steps correlate), so the spike
  stage records the output's rate ``mean_t g(x_t, y_t)`` and the rate stage returns it as the
  value. Its gradient is the formula's at the input rates ``r_x, r_y``: ``IAND``
  ``∂/∂r_x = 1 − r_y``, ``∂/∂r_y = −r_x``; ``AND`` ``r_y`` and ``r_x``. That is exactly the
  derivative of the recorded rate for an input change spread evenly over the steps
  (``mean_t (1 − y_t) = 1 − r_y``), the assumption the neurons' eligibilities make of their
  inputs, and at T = 1 it is BPTT's gradient.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..neurons.spikes import PackedSpikes, pack_spikes, unpack_spikes
from ..runtime.context import current_pass
from .time import time_mean

CONNECTS = ("ADD", "AND", "IAND")


def connect_values(connect: str, x: Tensor, y: Tensor) -> Tensor:
    """``g(x, y)`` on plain tensors (SpikingJelly's ``sew_function``)."""
    if connect == "ADD":
        return x + y
    if connect == "AND":
        return x * y
    return x * (1.0 - y)


class SpikeElementWise(nn.Module):
    """``g(x, y)`` of a SEW block (``connect``: ``"ADD"``, ``"AND"`` or ``"IAND"``), right in every pass."""

    def __init__(self, connect: str) -> None:
        super().__init__()
        if connect not in CONNECTS:
            raise ConfigError(
                f"spike-element-wise connect function {connect!r} is unknown; one of {', '.join(CONNECTS)}"
            )
        self.connect = connect

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        state = current_pass(required=False)
        if state is None or state.kind == "bptt":
            return connect_values(self.connect, unpack_spikes(x), unpack_spikes(y))
        if state.kind == "rate_stage":
            formula = connect_values(self.connect, x, y)
            if self.connect == "ADD":
                return formula
            assert state.trace is not None  # the RateBP stages carry a trace (PassState checks)
            return state.trace.gate(self) + (formula - formula.detach())  # value: the recorded rate
        out = self._on_spikes(x, y)
        if state.kind == "spike_stage" and self.connect != "ADD":
            assert state.trace is not None
            state.trace.record_gate(self, time_mean(out))
        return out

    def _on_spikes(self, x: Tensor, y: Tensor) -> Tensor:
        if isinstance(x, PackedSpikes) and isinstance(y, PackedSpikes):
            a, b = x.packed, y.packed
            if self.connect == "AND":
                return pack_spikes(a & b, x.float_dtype)
            if self.connect == "IAND":
                return pack_spikes(a & (b ^ 1), x.float_dtype)
            return a.to(x.float_dtype).add_(b)
        return connect_values(self.connect, unpack_spikes(x), unpack_spikes(y))

    def extra_repr(self) -> str:
        return f"connect={self.connect}"


__all__ = ["CONNECTS", "SpikeElementWise", "connect_values"]
