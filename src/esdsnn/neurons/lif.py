"""Leaky integrate-and-fire neuron (SPEC §2): one pure step function, a thin module around it.

Per step: charge ``h_t = λ·u_{t-1} + x_t``; fire ``s_t = H(h_t − θ)``; reset soft
``u_t = h_t − θ·s_t`` or hard ``u_t = h_t·(1 − s_t) + v_reset·s_t``. BPTT unrolls
:func:`lif_step`; the RateBP spike stage runs :func:`lif_rate_eligibility`, which also returns the
eligibility ``e = ∂(mean_t s_t)/∂x`` of a constant input; the rate stage returns the recorded rate
with gradient ``e``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..passes.context import current_pass
from .surrogate import SigmoidSurrogate

ResetMode = Literal["soft", "hard"]


@dataclass(frozen=True)
class LIFParams:
    """Fixed (non-learned) parameters of the LIF dynamics."""

    threshold: float = 1.0
    reset: ResetMode = "soft"
    v_reset: float = 0.0
    detach_reset: bool = True
    surrogate: SigmoidSurrogate = field(default_factory=SigmoidSurrogate)

    def __post_init__(self) -> None:
        if self.reset not in ("soft", "hard"):
            raise ValueError(f"reset must be 'soft' or 'hard', got {self.reset!r}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")

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


def lif_step(x: Tensor, u: Tensor, decay: Tensor | float, p: LIFParams) -> tuple[Tensor, Tensor]:
    """One differentiable LIF step: returns ``(spike, next_membrane)``."""
    h = decay * u + x
    s = p.surrogate.spike(h - p.threshold)
    s_reset = s.detach() if p.detach_reset else s
    if p.reset == "soft":
        u_next = h - p.threshold * s_reset
    else:
        u_next = h * (1.0 - s_reset) + p.v_reset * s_reset
    return s, u_next


def lif_multistep(x_seq: Tensor, decay: Tensor | float, p: LIFParams) -> Tensor:
    """Spikes ``[T, ...]`` for inputs ``[T, ...]``, under autograd (BPTT) or not (inference)."""
    u = p.initial_membrane(x_seq[0])
    spikes = []
    for x_t in x_seq:
        s, u = lif_step(x_t, u, decay, p)
        spikes.append(s)
    return torch.stack(spikes).to(x_seq.dtype)  # no-op in float32; 0/1 are exact in half types


def membrane_derivative(s: Tensor, h: Tensor, sg: Tensor, p: LIFParams) -> Tensor | float:
    """``∂u_t/∂h_t`` by the reset rule (SPEC §3 table); ``sg`` is ``σ'(h_t − θ)``."""
    if p.reset == "soft":
        return 1.0 if p.detach_reset else 1.0 - p.threshold * sg
    if p.detach_reset:
        return 1.0 - s
    return 1.0 - s + (p.v_reset - h) * sg


def _reset_inplace(h: Tensor, s: Tensor, p: LIFParams) -> Tensor:
    """Next membrane from ``h`` (overwritten) and spikes ``s`` (values only)."""
    if p.reset == "soft":
        return h.sub_(s) if p.threshold == 1.0 else h.sub_(s, alpha=p.threshold)
    return h.mul_(1.0 - s).add_(s, alpha=p.v_reset) if p.v_reset != 0.0 else h.mul_(1.0 - s)


@torch.no_grad()
def lif_spikes(x_seq: Tensor, decay: Tensor | float, p: LIFParams, out: Tensor | None = None) -> Tensor:
    """Inference: spikes ``[T, ...]`` without autograd. ``out`` may be ``x_seq`` itself (in place)."""
    spikes = torch.empty_like(x_seq) if out is None else out
    u = p.initial_membrane(x_seq[0])
    for t in range(x_seq.shape[0]):
        h = u.mul_(decay).add_(x_seq[t])  # u is dead after the charge: its storage becomes h
        torch.ge(h, p.threshold, out=spikes[t])  # x_seq[t] was read above: spikes may overwrite it
        u = _reset_inplace(h, spikes[t], p)
    return spikes


@torch.no_grad()
def lif_rate_eligibility(
    x_seq: Tensor, decay: Tensor | float, p: LIFParams, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Spike stage of one LIF layer: ``(spikes [T, ...], rate, eligibility)``, no autograd.

    The eligibility follows the recursion ``κ_0 = 1``, ``κ_{t+1} = 1 + λ·κ_t·∂u_t/∂h_t`` and
    ``e = mean_t κ_t·σ'(h_t)``, which is exactly the surrogate derivative of the rate with respect
    to a constant input. Rate and eligibility are accumulated in the same loop as the spikes;
    ``out`` may be ``x_seq`` itself, so the layer needs no second ``[T, ...]`` buffer.
    """
    T = x_seq.shape[0]
    alpha = p.surrogate.alpha
    spikes = torch.empty_like(x_seq) if out is None else out
    u = p.initial_membrane(x_seq[0])
    kappa = torch.ones_like(u)
    eligibility = torch.zeros_like(u)
    rate = torch.zeros_like(u)
    for t in range(T):
        h = u.mul_(decay).add_(x_seq[t])
        s = spikes[t]  # float, or uint8 for compact output (0/1 either way)
        torch.ge(h, p.threshold, out=s)
        rate.add_(s)
        # g(1-g) with g = sigmoid(α(h-θ)), computed in one scratch buffer; σ' = α·g(1-g)
        g = torch.sub(h, p.threshold).mul_(alpha).sigmoid_()
        g_one_minus_g = g.addcmul_(g, g, value=-1.0)
        eligibility.addcmul_(kappa, g_one_minus_g, value=alpha)
        if t + 1 < T:
            if p.reset == "soft" and p.detach_reset:
                kappa.mul_(decay).add_(1.0)
            else:
                dudh = membrane_derivative(s, h, g_one_minus_g.mul_(alpha), p)
                kappa.mul_(dudh).mul_(decay).add_(1.0)
        u = _reset_inplace(h, s, p)
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


EAGER_KERNELS = LIFKernels(lif_multistep, lif_rate_eligibility, lif_spikes)


@functools.lru_cache(maxsize=None)
def compiled_kernels() -> LIFKernels:
    """The kernels through ``torch.compile`` (built once, compiled on first use per shape)."""
    return LIFKernels(*(torch.compile(fn) for fn in EAGER_KERNELS))


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


@dataclass(frozen=True)
class LIFConfig:
    """Everything that configures the LIF layers of a model (all models take one)."""

    decay: float = 0.2
    threshold: float = 1.0
    reset: ResetMode = "soft"
    v_reset: float = 0.0
    detach_reset: bool = True
    learnable_decay: bool = False
    surrogate_alpha: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        LIFParams(self.threshold, self.reset, self.v_reset, self.detach_reset, SigmoidSurrogate(self.surrogate_alpha))

    def build(self, inplace: bool = False, compact: bool = False) -> "LIF":
        """A LIF layer; in the no-grad passes, ``inplace`` writes spikes over the layer's input and
        ``compact`` returns them as uint8 (for consumers that take it; see :class:`LIF`)."""
        return LIF(
            inplace=inplace,
            compact=compact,
            decay=self.decay,
            threshold=self.threshold,
            reset=self.reset,
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
            learnable_decay=self.learnable_decay,
            surrogate=SigmoidSurrogate(self.surrogate_alpha),
        )


class LIF(nn.Module):
    """Multi-step LIF layer on folded activations ``[steps·B, ...]`` of the running pass.

    The decay is held as ``logit(decay)`` so that ``λ = sigmoid(param)`` stays in (0, 1); a buffer
    by default, a parameter with ``learnable_decay=True`` (trained by the BPTT methods).
    ``inplace=True`` (like ``nn.ReLU(inplace=True)``): in the no-grad passes (inference, RateBP
    spike stage) the spikes overwrite the input, which the caller must not need afterwards.
    ``compact=True``: in those passes the spikes come back as uint8 (exactly 0/1, a quarter of
    float32's bytes), so the activations a block holds over all T steps shrink; the layers that
    read them must take uint8 (esdsnn's ``Conv2d`` does, a float + uint8 sum promotes to float,
    ``time_mean`` averages them as floats; pooling does not). BPTT and the rate stage always get
    floats.
    ``kernels``: the time loops it runs (eager by default; see :func:`compile_neurons_`).
    """

    kernels: LIFKernels = EAGER_KERNELS

    def __init__(
        self,
        decay: float = 0.2,
        threshold: float = 1.0,
        reset: ResetMode = "soft",
        v_reset: float = 0.0,
        detach_reset: bool = True,
        learnable_decay: bool = False,
        surrogate: SigmoidSurrogate | None = None,
        inplace: bool = False,
        compact: bool = False,
    ) -> None:
        super().__init__()
        self.inplace = inplace
        self.compact = compact
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.params = LIFParams(threshold, reset, v_reset, detach_reset, surrogate or SigmoidSurrogate())
        logit = torch.tensor(math.log(decay / (1.0 - decay)))
        if learnable_decay:
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
        if state.kind == "rate":
            record = state.trace.neuron(self)
            if record.rate.shape != x.shape:
                raise RuntimeError(f"rate stage input {tuple(x.shape)} does not match the recorded rate {tuple(record.rate.shape)}")
            return _RateWithEligibility.apply(x, record.rate, record.eligibility)
        x_seq = x.view(state.steps, -1, *x.shape[1:])
        if self.compact and state.kind in ("record", "infer"):
            out = torch.empty_like(x_seq, dtype=torch.uint8)
        else:
            out = x_seq if self.inplace else None
        if state.kind == "record":
            spikes, rate, eligibility = self.kernels.rate_eligibility(x_seq, self.decay.detach(), self.params, out=out)
            state.trace.record_neuron(self, rate, eligibility)
        elif state.kind == "infer":
            spikes = self.kernels.spikes(x_seq, self.decay.detach(), self.params, out=out)
        else:
            spikes = self.kernels.multistep(x_seq, self.decay, self.params)
        return spikes.flatten(0, 1)

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"decay={self.decay.item():.3g}, threshold={p.threshold}, reset={p.reset}, "
            f"detach_reset={p.detach_reset}, learnable_decay={self.learnable_decay}, "
            f"surrogate_alpha={p.surrogate.alpha}, inplace={self.inplace}, compact={self.compact}"
        )
