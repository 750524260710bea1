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
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..runtime.context import current_pass
from .fused import LOW_PRECISION, lif_multistep_fused, membrane_dtype
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

#: Neurons the no-grad loops take at a time on CPU. Each op of a step reads and writes one
#: membrane-sized buffer or more; for so many neurons (1 MiB a float32 buffer) the loop's buffers
#: stay in the cache over the T steps, where those of a whole large layer stream from memory in
#: every op (measured on an AVX512-BF16 CPU, one thread: 64 channels 32×32, batch 32, T = 6, bfloat16 input: 56 ms whole,
#: 28 ms in blocks). Every op is elementwise and blocks start at multiples of the vector width (each
#: value takes the vectorised or scalar path it takes in one pass), so blocks compute exactly what
#: one pass computes.
CPU_BLOCK = 1 << 18


def _blocks(x_seq: Tensor, spikes: Tensor, *per_neuron: Tensor) -> list[tuple[Tensor, ...]]:
    """``(x, spikes, *per_neuron)`` as blocks of at most :data:`CPU_BLOCK` neurons
    (``[T, n]``, ``[T, n]``, ``[n]``...): on CPU, where the neurons flatten into a view; else whole."""
    T, n = x_seq.shape[0], x_seq[0].numel()
    if x_seq.device.type != "cpu" or n <= CPU_BLOCK:
        return [(x_seq, spikes, *per_neuron)]
    try:
        flat = [x_seq.view(T, n), spikes.view(T, n)] + [t.view(n) for t in per_neuron]
    except RuntimeError:  # neurons not flat in memory (a strided view): one block
        return [(x_seq, spikes, *per_neuron)]
    return [tuple(t[..., lo : lo + CPU_BLOCK] for t in flat) for lo in range(0, n, CPU_BLOCK)]


def _run_steps(
    x_seq: Tensor,
    decay: Tensor | float,
    p: LIFConfig,
    spikes: Tensor,
    observe: Optional[StepObserver] = None,
    scratch: Optional[Tensor] = None,
) -> Tensor:
    """Charge, fire and reset in place for every step, writing ``spikes[t]``; ``observe(t, h, s)``
    sees each step's pre-reset membrane and spikes (in the membrane's type). ``scratch``: a
    membrane-sized buffer to use (the observer may use it too: it is free once a step's charge is
    done)."""
    u = p.initial_membrane(x_seq[0])
    # Spikes of another type (uint8, bfloat16) are fired into a membrane-typed buffer and copied:
    # comparisons into floats are fast, and the reset and the observer read one type. Half-type
    # input is widened step by step in the scratch buffer, not in a new temporary every step.
    fired = None if spikes.dtype == u.dtype else torch.empty_like(u)
    widen = x_seq.dtype != u.dtype
    if widen and scratch is None:
        scratch = torch.empty_like(u)
    wide = scratch if widen else None  # the buffer half-type input is widened in
    for t in range(x_seq.shape[0]):
        h = charge(u, x_seq[t] if wide is None else wide.copy_(x_seq[t]), decay, out=u)
        s = fire(h, p, out=spikes[t] if fired is None else fired)  # (x_seq[t] was read above: spikes may overwrite it)
        if observe is not None:
            observe(t, h, s)
        u = reset(h, s, p, out=h)
        if fired is not None:
            spikes[t].copy_(fired)
    return spikes


@torch.no_grad()
def lif_spikes(x_seq: Tensor, decay: Tensor | float, p: LIFConfig, out: Tensor | None = None) -> Tensor:
    """Inference: spikes ``[T, ...]`` without autograd into ``out`` (new; may be ``x_seq``
    itself, or a uint8 buffer)."""
    spikes = torch.empty_like(x_seq) if out is None else out
    for x_block, spikes_block in _blocks(x_seq, spikes):
        _run_steps(x_block, decay, p, spikes_block)
    return spikes


@torch.no_grad()
def lif_rate_eligibility(
    x_seq: Tensor, decay: Tensor | float, p: LIFConfig, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Spike stage of one LIF layer: ``(spikes [T, ...], rate, eligibility)``, no autograd.

    The eligibility follows the recursion ``κ_0 = 1``, ``κ_{t+1} = 1 + λ·κ_t·∂u_t/∂h_t`` and
    ``e = mean_t κ_t·σ'(h_t)``, which is exactly the surrogate derivative of the rate with respect
    to a constant input. Rate and eligibility are accumulated in the same loop as the spikes, with
    one scratch buffer.
    """
    T = x_seq.shape[0]
    spikes = torch.empty_like(x_seq) if out is None else out
    rate = torch.zeros_like(x_seq[0], dtype=membrane_dtype(x_seq))
    eligibility = torch.zeros_like(rate)
    for x_block, spikes_block, rate_block, eligibility_block in _blocks(x_seq, spikes, rate, eligibility):
        _rate_eligibility_block(x_block, spikes_block, rate_block, eligibility_block, decay, p)
    return spikes, rate.div_(T), eligibility.div_(T)


def _rate_eligibility_block(
    x_seq: Tensor, spikes: Tensor, rate: Tensor, eligibility: Tensor, decay: Tensor | float, p: LIFConfig
) -> None:
    """:func:`lif_rate_eligibility` on one block of neurons, summing into ``rate`` and ``eligibility``."""
    T = x_seq.shape[0]
    scratch = torch.empty_like(rate)
    # soft reset with detached reset: ∂u/∂h = 1, so κ_t = 1 + λ·κ_{t-1} is one number for all neurons
    shared_kappa = p.reset == "soft" and p.detach_reset
    kappa = torch.ones((), dtype=rate.dtype, device=rate.device) if shared_kappa else torch.ones_like(rate)

    def observe(t: int, h: Tensor, s: Tensor) -> None:
        rate.add_(s)
        sg = p.surrogate_fn.derivative_(torch.sub(h, p.threshold, out=scratch))
        eligibility.addcmul_(kappa, sg)
        if t + 1 < T:
            if shared_kappa:
                kappa.mul_(decay).add_(1.0)
            else:
                kappa.mul_(membrane_derivative(s, h, sg, p)).mul_(decay).add_(1.0)

    _run_steps(x_seq, decay, p, spikes, observe, scratch)


class _RateWithEligibility(torch.autograd.Function):
    """Rate-stage neuron: value = recorded rate, gradient w.r.t. the input = eligibility."""

    @staticmethod
    def forward(ctx, x: Tensor, rate: Tensor, eligibility: Tensor) -> Tensor:
        ctx.save_for_backward(eligibility)
        return rate.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
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


@functools.cache
def compiled_kernels() -> LIFKernels:
    """The kernels through ``torch.compile`` (built once, compiled on first use per shape). BPTT
    keeps its one autograd node and compiles the node's forward and backward loops."""
    from .fused import bptt_backward, bptt_forward

    multistep = functools.partial(
        lif_multistep_fused,
        forward_loop=_with_fallback(torch.compile(bptt_forward), bptt_forward),
        backward_loop=_with_fallback(torch.compile(bptt_backward), bptt_backward),
    )
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
                warnings.warn(
                    f"compiled neuron loop {eager.__name__} failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); running it eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
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
    no-grad passes the spikes of float32 activations come back packed, one byte a value
    (:class:`~esdsnn.neurons.spikes.PackedSpikes`, read as floats by any consumer), those of
    bfloat16/float16 activations (mixed precision) in that type; BPTT and the rate stage get plain
    floats. ``kernels``: the time loops it runs (eager by default, compiled
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
            assert state.trace is not None  # the RateBP stages carry a trace (PassState checks)
            record = state.trace.neuron(self)
            if record.rate.shape != x.shape:
                raise RuntimeError(
                    f"rate stage input {tuple(x.shape)} does not match the recorded rate {tuple(record.rate.shape)}"
                )
            return _RateWithEligibility.apply(x, record.rate, record.eligibility)
        x_seq = x.view(state.steps, -1, *x.shape[1:])
        kernels = kernels_for(x.device, self.kernels)
        if state.kind == "bptt":
            return kernels.multistep(x_seq, self.decay, p).flatten(0, 1)
        # one byte a spike where that saves memory: on float32 activations. Half-type activations
        # (bf16-mixed) get spikes in their own type, which the next convolution reads without a cast
        packed = state.memory.compact_spikes and x.dtype not in LOW_PRECISION
        out = torch.empty_like(x_seq, dtype=torch.uint8) if packed else None
        if state.kind == "spike_stage":
            spikes, rate, eligibility = kernels.rate_eligibility(x_seq, self.decay.detach(), p, out=out)
            assert state.trace is not None
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
