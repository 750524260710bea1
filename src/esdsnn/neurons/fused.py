"""BPTT through a LIF layer as one autograd node: forward loop, closed-form reverse-time backward.

Unrolling :func:`~esdsnn.neurons.lif.lif_step` under autograd records every elementwise op of
every step (charge, threshold, reset: about six nodes and their saved tensors a step). Here the
whole multi-step neuron is one :class:`torch.autograd.Function`. The forward runs the same
charge/fire/reset (the functions of :mod:`esdsnn.neurons.step`, in their ``out=`` forms) and saves
only the pre-reset membranes ``h_t`` (spikes ``s_t = H(h_t − θ)`` and ``u_{t-1}`` are recomputed
from them by the same functions); the backward runs the recursion of SPEC §3 from
``t = T − 1`` down to 0 with ``g_u`` the gradient reaching ``u_t`` from later steps:

    ∂L/∂h_t = ∂L/∂s_t · σ'(h_t − θ) + g_u · ∂u_t/∂h_t      (the reset/detach row's derivative)
    ∂L/∂x_t = ∂L/∂h_t,   g_u ← λ · ∂L/∂h_t,   ∂L/∂λ += Σ ∂L/∂h_t · u_{t-1}

which is what autograd computes through the loop, to float rounding (tested for the four
reset/detach rows and a learnable decay). The two loops are plain functions of tensors, so the
GPU path compiles them (:func:`~esdsnn.neurons.lif.compiled_kernels`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor

from .step import LIFConfig, charge, fire, membrane_derivative, reset

LOW_PRECISION = (torch.float16, torch.bfloat16)


def membrane_dtype(x: Tensor) -> torch.dtype:
    """Membranes are float32 when the activations are half types (see ``initial_membrane``)."""
    return torch.float32 if x.dtype in LOW_PRECISION else x.dtype


def bptt_forward(x_seq: Tensor, decay: Tensor | float, p: LIFConfig) -> tuple[Tensor, Tensor]:
    """``(spikes [T, ...] in x's dtype, pre-reset membranes h [T, ...])`` without autograd: the
    step's charge, fire and reset, each written into its buffer (``h_seq[t]``, ``spikes[t]``, ``u``)."""
    h_seq = torch.empty_like(x_seq, dtype=membrane_dtype(x_seq))
    spikes = torch.empty_like(x_seq)
    u = p.initial_membrane(x_seq[0])
    for t in range(x_seq.shape[0]):
        h = charge(u, x_seq[t], decay, out=h_seq[t])
        reset(h, fire(h, p, out=spikes[t]), p, out=u)
    return spikes, h_seq


def bptt_backward(
    grad_spikes: Tensor, h_seq: Tensor, decay: Tensor | float, p: LIFConfig, want_decay_grad: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """``(∂L/∂x [T, ...], ∂L/∂λ or None)`` from ``∂L/∂s`` and the saved membranes (the spikes
    recomputed from them by the step's :func:`fire`)."""
    T = h_seq.shape[0]
    grad_x = torch.empty_like(grad_spikes)
    grad_u = torch.zeros_like(h_seq[0])
    grad_decay = torch.zeros((), dtype=h_seq.dtype, device=h_seq.device) if want_decay_grad else None
    scratch = torch.empty_like(grad_u)
    spikes = torch.empty_like(grad_u) if p.reset == "hard" else None  # only the hard reset's ∂u/∂h reads s_t
    for t in range(T - 1, -1, -1):
        h = h_seq[t]
        s = None if spikes is None else fire(h, p, out=spikes)
        sg = p.surrogate_fn.derivative_(torch.sub(h, p.threshold, out=scratch))
        through_reset = membrane_derivative(s, h, sg, p)
        if not (isinstance(through_reset, float) and through_reset == 1.0):
            grad_u.mul_(through_reset)
        grad_h = torch.addcmul(grad_u, grad_spikes[t], sg, out=grad_x[t])  # ∂L/∂x_t = ∂L/∂h_t
        if grad_decay is not None:
            h_prev = h_seq[t - 1] if t > 0 else None
            u_prev = p.initial_membrane(h) if h_prev is None else reset(h_prev, fire(h_prev, p), p)
            grad_decay.add_(torch.sum(grad_h * u_prev))
        torch.mul(grad_h, decay, out=grad_u)
    return grad_x, grad_decay


class _FusedLIF(torch.autograd.Function):
    """The multi-step LIF as one node (see the module notes)."""

    @staticmethod
    def forward(
        ctx,
        x_seq: Tensor,
        decay: Tensor | float,
        p: LIFConfig,
        forward_loop: Callable,
        backward_loop: Callable,
    ) -> Tensor:
        decay_value = decay.detach() if isinstance(decay, Tensor) else decay
        spikes, h_seq = forward_loop(x_seq, decay_value, p)
        ctx.p, ctx.backward_loop = p, backward_loop
        ctx.decay_is_tensor = isinstance(decay, Tensor)
        ctx.decay_float = None if ctx.decay_is_tensor else decay
        ctx.save_for_backward(h_seq, *([decay_value] if ctx.decay_is_tensor else []))
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        h_seq, *rest = ctx.saved_tensors
        decay = rest[0] if ctx.decay_is_tensor else ctx.decay_float
        want_decay = ctx.decay_is_tensor and ctx.needs_input_grad[1]
        grad_x, grad_decay = ctx.backward_loop(
            grad_spikes.to(h_seq.dtype).contiguous(), h_seq, decay, ctx.p, want_decay
        )
        grad_x = grad_x.to(grad_spikes.dtype)
        if grad_decay is not None:
            grad_decay = grad_decay.to(rest[0].dtype).reshape(rest[0].shape)
        return grad_x, grad_decay, None, None, None


def lif_multistep_fused(
    x_seq: Tensor,
    decay: Tensor | float,
    p: LIFConfig,
    *,
    forward_loop: Callable = bptt_forward,
    backward_loop: Callable = bptt_backward,
) -> Tensor:
    """Spikes ``[T, ...]`` for inputs ``[T, ...]`` under autograd, as one autograd node; equal to
    :func:`~esdsnn.neurons.lif.lif_multistep` in values and gradients (to float rounding)."""
    return _FusedLIF.apply(x_seq, decay, p, forward_loop, backward_loop)


__all__ = ["bptt_backward", "bptt_forward", "lif_multistep_fused", "membrane_dtype"]
