"""Leaky integrate-and-fire neuron (SPEC §2): the step written once, the loops around it, a thin module.

Per step (:mod:`esdsnn.neurons.step`): charge ``h_t = λ·u_{t-1} + x_t`` (:func:`charge`); fire
``s_t = H(h_t − θ)``, 1 when ``h_t ≥ θ`` (:func:`fire`); reset (:func:`reset`) soft
``u_t = h_t − θ·s_t`` or hard ``u_t = h_t·(1 − s_t) + v_reset·s_t``.
BPTT runs the loop as one autograd node (:func:`~esdsnn.neurons.fused.lif_multistep_fused`, equal
to unrolling :func:`lif_step` under autograd, :func:`lif_multistep`); the no-grad passes run the
same charge/fire/reset in place (:func:`lif_spikes`), and RateBP's spike stage also accumulates
the rate and the eligibility ``e = ∂(mean_t s_t)/∂x`` of a constant input
(:func:`lif_rate_eligibility`), with ``σ'`` from the configuration's surrogate object, the one
BPTT differentiates. The rate stage returns the recorded rate with gradient ``e``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..runtime.context import current_pass
from .fused import lif_multistep_fused
from .spikes import pack_spikes
from .step import IF_LOGIT, LIFConfig, charge, fire, lif_step, membrane_derivative, reset


# ---- the loops over time ----------------------------------------------------------------------
def lif_multistep(x_seq: Tensor, decay: Tensor | float, p: LIFConfig) -> Tensor:
    """Spikes ``[T, ...]`` for inputs ``[T, ...]`` under autograd (BPTT)."""
    u = p.initial_membrane(x_seq[0])
    spikes = []
    for x_t in x_seq:
        s, u = lif_step(x_t, u, decay, p)
        spikes.append(s)
    return torch.stack(spikes).to(x_seq.dtype)  # no-op in float32; 0/1 are exact in half types


StepObserver = Callable[[int, Tensor, Tensor], None]


def _run_steps(x_seq: Tensor, decay: Tensor | float, p: LIFConfig, spikes: Tensor,
               observe: Optional[StepObserver] = None) -> Tensor:
    """Charge, fire and reset in place for every step, writing ``spikes[t]``; ``observe(t, h, s)``
    sees each step's pre-reset membrane and spikes."""
    u = p.initial_membrane(x_seq[0])
    for t in range(x_seq.shape[0]):
        h = charge(u, x_seq[t], decay, out=u)
        s = fire(h, p, out=spikes[t])  # float, or uint8 (x_seq[t] was read above: spikes may overwrite it)
        if observe is not None:
            observe(t, h, s)
        u = reset(h, s, p, out=h)
    return spikes


@torch.no_grad()
def lif_spikes(x_seq: Tensor, decay: Tensor | float, p: LIFConfig, out: Tensor | None = None) -> Tensor:
    """Inference: spikes ``[T, ...]`` without autograd into ``out`` (new; may be ``x_seq``
    itself, or a uint8 buffer)."""
    return _run_steps(x_seq, decay, p, torch.empty_like(x_seq) if out is None else out)


@torch.no_grad()
def lif_rate_eligibility(
    x_seq: Tensor, decay: Tensor | float, p: LIFConfig, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Spike stage of one LIF layer: ``(spikes [T, ...], rate, eligibility)``, no autograd.

    The eligibility follows the recursion ``κ_0 = 1``, ``κ_{t+1} = 1 + λ·κ_t·∂u_t/∂h_t`` and
    ``e = mean_t κ_t·σ'(h_t)``, which is exactly the surrogate derivative of the rate with respect
    to a constant input. Rate and eligibility are accumulated in the same loop as the spikes, with
    one scratch buffer a step.
    """
    T = x_seq.shape[0]
    u0 = p.initial_membrane(x_seq[0])
    kappa = torch.ones_like(u0)
    eligibility = torch.zeros_like(u0)
    rate = torch.zeros_like(u0)

    def observe(t: int, h: Tensor, s: Tensor) -> None:
        rate.add_(s)
        sg = p.surrogate_fn.derivative_(torch.sub(h, p.threshold))
        eligibility.addcmul_(kappa, sg)
        if t + 1 < T:
            if p.reset == "soft" and p.detach_reset:
                kappa.mul_(decay).add_(1.0)
            else:
                kappa.mul_(membrane_derivative(s, h, sg, p)).mul_(decay).add_(1.0)

    spikes = _run_steps(x_seq, decay, p, torch.empty_like(x_seq) if out is None else out, observe)
    return spikes, rate.div_(T), eligibility.div_(T)


class _RateWithEligibility(torch.autograd.Function):
    """Rate-stage neuron: value = recorded rate, gradient w.r.t. the input = eligibility."""

    @staticmethod
    def forward(ctx, x: Tensor, rate: Tensor, eligibility: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(eligibility)
        return rate.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (eligibility,) = ctx.saved_tensors
        return grad_out * eligibility, None, None


class LIFKernels(NamedTuple):
    """The three time loops a LIF layer runs (BPTT, RateBP spike stage, inference)."""

    multistep: Callable[..., Tensor]
    rate_eligibility: Callable[..., tuple[Tensor, Tensor, Tensor]]
    spikes: Callable[..., Tensor]


#: BPTT through the fused node (one autograd node a layer, see :mod:`esdsnn.neurons.fused`);
#: :func:`lif_multistep` is the autograd loop it is tested against.
EAGER_KERNELS = LIFKernels(lif_multistep_fused, lif_rate_eligibility, lif_spikes)


@functools.lru_cache(maxsize=None)
def compiled_kernels() -> LIFKernels:
    """The kernels through ``torch.compile`` (built once, compiled on first use per shape). BPTT
    keeps its one autograd node and compiles the node's forward and backward loops."""
    from .fused import bptt_backward, bptt_forward

    multistep = functools.partial(lif_multistep_fused, forward_loop=_with_fallback(torch.compile(bptt_forward), bptt_forward),
                                  backward_loop=_with_fallback(torch.compile(bptt_backward), bptt_backward))
    return LIFKernels(multistep, *(_with_fallback(torch.compile(fn), fn) for fn in EAGER_KERNELS[1:]))


def _with_fallback(compiled: Callable, eager: Callable) -> Callable:
    """``compiled``, or ``eager`` from the first call on which compiling fails (no compiler for
    this device, say), with one warning that says so."""
    failed: list[BaseException] = []

    @functools.wraps(eager)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # a compiler or backend failure; the eager call re-raises real errors
                failed.append(exc)
                warnings.warn(f"compiled neuron loop {eager.__name__} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); running it eagerly", RuntimeWarning)
        return eager(*args, **kwargs)

    return call


def kernels_for(device: torch.device, chosen: LIFKernels) -> LIFKernels:
    """The loops a layer runs on ``device``: on CUDA the eager default becomes the compiled loops
    (fused kernels, eager fallback) unless ``ESDSNN_EAGER_NEURONS=1``; anything chosen explicitly
    (:func:`compile_neurons_`, a user's kernels) is kept."""
    if chosen is EAGER_KERNELS and device.type == "cuda" and os.environ.get("ESDSNN_EAGER_NEURONS") != "1":
        return compiled_kernels()
    return chosen


def compile_neurons_(model: nn.Module) -> int:
    """Make every LIF layer of ``model`` run its time loops through ``torch.compile`` (fused into
    few kernels instead of several per step); returns the number of layers changed.

    Only the neuron loops are compiled: they are pure functions of tensors, while the layers around
    them read the running pass, which would break a whole-model graph at every layer.
    """
    layers = [m for m in model.modules() if isinstance(m, LIF)]
    for layer in layers:
        layer.kernels = compiled_kernels()
    return len(layers)


class LIF(nn.Module):
    """Multi-step LIF layer on folded activations ``[steps·B, ...]`` of the running pass.

    ``LIF(config)`` or ``LIF(decay=0.5, ...)`` (the fields of :class:`LIFConfig`, over ``config``).
    The decay is held as ``logit(decay)`` so that ``λ = sigmoid(param)`` stays in (0, 1); a buffer
    by default, a parameter with ``learnable_decay=True`` (trained by the BPTT methods). In the
    no-grad passes the spikes come back packed, one byte a value
    (:class:`~esdsnn.neurons.spikes.PackedSpikes`, read as floats by any consumer); BPTT and the
    rate stage get plain floats. ``kernels``: the time loops it runs (eager by default, compiled
    on CUDA, see :func:`kernels_for`; :func:`compile_neurons_` compiles them anywhere).
    """

    kernels: LIFKernels = EAGER_KERNELS

    def __init__(self, config: Optional[LIFConfig] = None, **changes: Any) -> None:
        super().__init__()
        self.config = dataclasses.replace(config or LIFConfig(), **changes) if changes else (config or LIFConfig())
        d = self.config.decay
        # decay 1 (IF): sigmoid(50) rounds to exactly 1.0 in float32 and float64, and stays finite
        logit = torch.tensor(IF_LOGIT if d == 1.0 else math.log(d / (1.0 - d)))
        if self.config.learnable_decay:
            self.decay_logit = nn.Parameter(logit)
        else:
            self.register_buffer("decay_logit", logit)

    @property
    def learnable_decay(self) -> bool:
        return isinstance(self.decay_logit, nn.Parameter)

    @property
    def decay(self) -> Tensor:
        return torch.sigmoid(self.decay_logit)

    def forward(self, x: Tensor) -> Tensor:
        state = current_pass()
        p = self.config
        if state.kind == "rate_stage":
            record = state.trace.neuron(self)
            if record.rate.shape != x.shape:
                raise RuntimeError(f"rate stage input {tuple(x.shape)} does not match the recorded rate {tuple(record.rate.shape)}")
            return _RateWithEligibility.apply(x, record.rate, record.eligibility)
        x_seq = x.view(state.steps, -1, *x.shape[1:])
        kernels = kernels_for(x.device, self.kernels)
        if state.kind == "bptt":
            return kernels.multistep(x_seq, self.decay, p).flatten(0, 1)
        packed = state.memory.compact_spikes
        out = torch.empty_like(x_seq, dtype=torch.uint8) if packed else None
        if state.kind == "spike_stage":
            spikes, rate, eligibility = kernels.rate_eligibility(x_seq, self.decay.detach(), p, out=out)
            state.trace.record_neuron(self, rate, eligibility)
        else:
            spikes = kernels.spikes(x_seq, self.decay.detach(), p, out=out)
        spikes = spikes.flatten(0, 1)
        return pack_spikes(spikes, x.dtype) if packed else spikes

    def extra_repr(self) -> str:
        p = self.config
        return (
            f"decay={self.decay.item():.3g}, threshold={p.threshold}, reset={p.reset}, "
            f"detach_reset={p.detach_reset}, learnable_decay={self.learnable_decay}, "
            f"surrogate={p.surrogate}, surrogate_alpha={p.surrogate_alpha}"
        )
