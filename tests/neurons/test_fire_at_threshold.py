"""A neuron fires *at* its threshold (SPEC §2: ``H(0) = 1``, ``s_t = 1`` when ``h_t ≥ θ``), in every
kernel that runs the step: the autograd loop, the fused BPTT node (its forward and the spikes its
backward recomputes), the no-grad loops, their compiled versions and the differentiable spike.

The inputs are dyadic (λ = 1/2, θ and every ``x`` a multiple of 1/8 times a power of two), so
every membrane sum is exact in float32 and ``h_t == θ`` happens exactly where the hand
computation below says; a kernel testing ``h > θ`` gives other spikes and other gradients.
"""

import pytest
import torch

from esdsnn.neurons import LIFConfig, lif_multistep, lif_rate_eligibility, lif_spikes
from esdsnn.neurons.fused import lif_multistep_fused
from esdsnn.neurons.lif import compiled_kernels
from esdsnn.neurons.step import fire_with_surrogate

DECAY = 0.5
# x_t for four neurons (columns), T = 4; h_t = θ exactly at the steps marked in the comments
X = torch.tensor(
    [
        [1.0, 0.5, 1.5, 1.0],
        [1.0, 0.75, 0.75, 1.25],
        [1.0, 0.5, 0.0, 0.25],
        [1.0, 0.75, 0.0, 1.0],
    ]
)
# By hand, θ = 1, λ = 1/2, u_0 = 0 (soft, hard) or v_reset = -1/2 (hard, v_reset):
#  n0: h = 1 at every step: fires every step (u = 0 after each)                 -> 1 1 1 1
#      v_reset: h = 0.75, 1.375 (fire, u = -0.5), 0.75, 1.375 (fire)           -> 0 1 0 1
#  n1: h = 0.5, 1 (fire), 0.5, 1 (fire)                                          -> 0 1 0 1
#      v_reset: h = 0.25, 0.875, 0.9375, 1.21875 (fire)                         -> 0 0 0 1
#  n2: soft: h = 1.5 (fire, u = 0.5), 0.25 + 0.75 = 1 (fire), 0, 0              -> 1 1 0 0
#      hard: h = 1.5 (fire, u = 0), 0.75, 0.375, 0.1875                         -> 1 0 0 0
#      v_reset: h = 1.25 (fire, u = -0.5), 0.5, 0.25, 0.125                     -> 1 0 0 0
#  n3: soft: h = 1 (fire), 1.25 (fire, u = 0.25), 0.375, 1.1875 (fire)          -> 1 1 0 1
#      hard: h = 1 (fire), 1.25 (fire), 0.25, 1.125 (fire)                      -> 1 1 0 1
#      v_reset: h = 0.75, 1.625 (fire, u = -0.5), -0.25 + 0.25 = 0, 1 (fire)    -> 0 1 0 1
# (rows below: time steps; columns: n0..n3)
SPIKES = {
    ("soft", 0.0): [[1, 0, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 1]],
    ("hard", 0.0): [[1, 0, 1, 1], [1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 0, 1]],
    ("hard", -0.5): [[0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]],
}
RULES = list(SPIKES)
SCALES = [1.0, 0.25]  # θ = 1 and θ = 1/4 (x and v_reset scaled alike: the sums stay exact)


def case(rule, scale=1.0, detach_reset=True):
    """``(x [T, 4], LIFConfig, hand-computed spikes [T, 4])`` for one reset rule."""
    reset, v_reset = rule
    p = LIFConfig(decay=DECAY, threshold=scale, reset=reset, v_reset=v_reset * scale, detach_reset=detach_reset)
    return X * scale, p, torch.tensor(SPIKES[rule], dtype=torch.float32)


def test_the_hand_table_follows_the_step():
    """The table above by a plain Python loop (one float at a time), and the same loop with
    ``h > θ`` disagrees with it: every rule's table tests the comparison."""
    for (reset, v_reset), expected in SPIKES.items():
        for strict, same in ((False, True), (True, False)):
            got = []
            for n in range(4):
                u, column = v_reset if reset == "hard" else 0.0, []
                for t in range(4):
                    h = DECAY * u + float(X[t, n])
                    s = 1.0 if (h > 1.0 if strict else h >= 1.0) else 0.0
                    u = h - s if reset == "soft" else h * (1 - s) + v_reset * s
                    column.append(s)
                got.append(column)
            assert (torch.tensor(got).T == torch.tensor(expected, dtype=torch.float32)).all() == same


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("rule", RULES)
def test_autograd_loop_and_fused_node_fire_at_threshold(rule, scale):
    x, p, expected = case(rule, scale)
    assert torch.equal(lif_multistep(x, DECAY, p), expected)
    assert torch.equal(lif_multistep_fused(x, DECAY, p), expected)
    assert torch.equal(lif_multistep_fused(x.bfloat16(), DECAY, p), expected.bfloat16())


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("rule", RULES)
def test_no_grad_loops_fire_at_threshold(rule, scale):
    x, p, expected = case(rule, scale)
    assert torch.equal(lif_spikes(x, DECAY, p), expected)
    assert torch.equal(lif_spikes(x, DECAY, p, out=torch.empty_like(x, dtype=torch.uint8)), expected.to(torch.uint8))
    own = x.clone()
    assert torch.equal(lif_spikes(own, DECAY, p, out=own), expected)  # spikes written over the input
    spikes, rate, _ = lif_rate_eligibility(x, DECAY, p)
    assert torch.equal(spikes, expected) and torch.equal(rate, expected.mean(0))
    packed, rate, _ = lif_rate_eligibility(x, DECAY, p, out=torch.empty_like(x, dtype=torch.uint8))
    assert torch.equal(packed, expected.to(torch.uint8)) and torch.equal(rate, expected.mean(0))


def _grads(fn, x, p, grad_out):
    x = x.clone().requires_grad_()
    logit = torch.tensor(0.0, requires_grad=True)  # λ = sigmoid(0) = 1/2 exactly, learnable
    spikes = fn(x, torch.sigmoid(logit), p)
    return (spikes, *torch.autograd.grad((spikes * grad_out).sum(), [x, logit]))


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("rule", RULES)
def test_fused_backward_recomputes_the_spikes_at_threshold(rule, detach_reset):
    """The fused backward recomputes ``s_t`` from the saved ``h_t``: the hard reset's
    ``∂u_t/∂h_t = 1 − s_t (+ (v_reset − h_t)·σ')`` and the decay gradient's ``u_{t-1}`` read them.
    At ``h_t = θ`` its gradients equal the autograd loop's (whose spikes are checked above)."""
    x, p, expected = case(rule, detach_reset=detach_reset)
    grad_out = torch.linspace(-1.0, 1.5, 16).reshape(4, 4)
    loop, fused = _grads(lif_multistep, x, p, grad_out), _grads(lif_multistep_fused, x, p, grad_out)
    assert torch.equal(loop[0], expected) and torch.equal(fused[0], expected)
    assert loop[1].abs().max() > 0 and loop[2].abs() > 0
    for a, b in zip(fused[1:], loop[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("rule", RULES)
def test_eligibility_at_threshold_equals_autograd(rule, detach_reset):
    """A constant input with ``h_0 = λ·u_0 + x = θ`` exactly (then ``h_t = θ`` at every step: the
    neuron fires each step and resets to ``u_0``); the eligibility's ``κ`` reads the spikes."""
    reset, v_reset = rule
    p = LIFConfig(decay=DECAY, reset=reset, v_reset=v_reset, detach_reset=detach_reset)
    x = torch.tensor([1.0, 1.25, 0.5]) - DECAY * v_reset
    xc = x.clone().requires_grad_()
    rate = lif_multistep(xc.expand(4, -1), DECAY, p).mean(0)
    (grad,) = torch.autograd.grad(rate.sum(), xc)
    _, recorded, eligibility = lif_rate_eligibility(x.expand(4, -1).clone(), DECAY, p)
    assert recorded[0] == rate[0] == 1.0
    assert torch.equal(recorded, rate.detach())
    torch.testing.assert_close(eligibility, grad, rtol=1e-6, atol=1e-7)


def test_the_differentiable_spike_fires_at_threshold():
    """``H(0) = 1`` forward; ``σ'(0)`` backward (α/4 for the sigmoid surrogate)."""
    p = LIFConfig(threshold=0.75, surrogate_alpha=4.0)
    h = torch.tensor([0.75, 0.75 - 2**-24, 0.75 + 2**-24, -0.75], requires_grad=True)
    s = fire_with_surrogate(h, p)
    assert s.tolist() == [1.0, 0.0, 1.0, 0.0]
    (grad,) = torch.autograd.grad(s.sum(), h)
    assert grad[0].item() == 1.0  # α·g·(1 − g) at g = 1/2


@pytest.mark.slow
def test_compiled_kernels_fire_at_threshold():
    """The compiled loops (the GPU default) on the hand table: BPTT's forward and backward, the
    spike stage and inference, each compiled once (tiny shapes; compiling takes seconds)."""
    kernels = compiled_kernels()
    x, p, expected = case(("hard", 0.0), detach_reset=False)
    grad_out = torch.linspace(-1.0, 1.5, 16).reshape(4, 4)
    compiled, loop = _grads(kernels.multistep, x, p, grad_out), _grads(lif_multistep, x, p, grad_out)
    assert torch.equal(compiled[0], expected)
    for a, b in zip(compiled[1:], loop[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    spikes, rate, _ = kernels.rate_eligibility(x.clone(), DECAY, p, out=torch.empty_like(x, dtype=torch.uint8))
    assert torch.equal(spikes, expected.to(torch.uint8)) and torch.equal(rate, expected.mean(0))
    x, p, expected = case(("soft", 0.0))
    assert torch.equal(kernels.spikes(x.clone(), DECAY, p), expected)
