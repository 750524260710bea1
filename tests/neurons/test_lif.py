"""LIF forward against a hand-written loop, SpikingJelly, and BPTT gradients against manual unrolling."""

import math

import pytest
import torch

from esdsnn.neurons import LIF, LIFConfig, SigmoidSurrogate, lif_multistep, lif_rate_eligibility
from esdsnn.passes import PassState, use_pass

torch.set_num_threads(1)

DECAY = 0.2


@pytest.fixture
def spikingjelly():
    """SpikingJelly's neuron and surrogate modules; only the tests that compare against it skip
    when it is missing, the hand-computed references always run."""
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    return neuron, surrogate


def reference_loop(x, decay, threshold, reset, v_reset=0.0):
    """Plain Python-float LIF per SPEC §2, one neuron at a time."""
    T, n = x.shape
    out = torch.zeros_like(x)
    for i in range(n):
        u = v_reset if reset == "hard" else 0.0
        for t in range(T):
            h = decay * u + float(x[t, i])
            s = 1.0 if h >= threshold else 0.0
            u = h - threshold * s if reset == "soft" else h * (1 - s) + v_reset * s
            out[t, i] = s
    return out


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_forward_matches_hand_loop(reset):
    x = torch.randn(7, 50, dtype=torch.float64) * 1.5
    p = LIFConfig(reset=reset)
    expected = reference_loop(x, DECAY, 1.0, reset)
    torch.testing.assert_close(lif_multistep(x, DECAY, p), expected)
    spikes, rate, _ = lif_rate_eligibility(x.clone(), DECAY, p)
    torch.testing.assert_close(spikes, expected)
    torch.testing.assert_close(rate, expected.mean(0))


def test_fires_at_threshold_exactly():
    x = torch.tensor([[1.0], [0.0]])  # h_0 = θ exactly: H(0) = 1
    assert lif_multistep(x, DECAY, LIFConfig()).flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_forward_and_grad_match_spikingjelly(reset, detach_reset, spikingjelly):
    neuron_sj, surrogate_sj = spikingjelly
    tau = 1.0 / (1.0 - DECAY)
    sj = neuron_sj.LIFNode(
        tau=tau,
        decay_input=False,
        v_threshold=1.0,
        v_reset=0.0 if reset == "hard" else None,
        detach_reset=detach_reset,
        surrogate_function=surrogate_sj.Sigmoid(alpha=4.0),
        step_mode="m",
    ).double()
    ours = LIF(decay=DECAY, reset=reset, detach_reset=detach_reset).double()
    x = (torch.randn(6, 4, 3, 5, 5, dtype=torch.float64) * 1.5).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    expected = sj(x)
    with use_pass(PassState("bptt", 6)):
        got = ours(x2.flatten(0, 1)).view_as(x2)
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(expected)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)


def unrolled_bptt_grad(x, decay, threshold, reset, detach_reset, alpha):
    """Manual unrolling with an explicit smooth stand-in: s = H + (g - g.detach()), g = sigmoid(α(h-θ))."""
    u = torch.zeros_like(x[0])
    outs = []
    for t in range(x.shape[0]):
        h = decay * u + x[t]
        g = torch.sigmoid(alpha * (h - threshold))
        s = (h >= threshold).to(h.dtype) + g - g.detach()
        sr = s.detach() if detach_reset else s
        u = h - threshold * sr if reset == "soft" else h * (1 - sr)
        outs.append(s)
    return torch.stack(outs)


@pytest.mark.parametrize("reset", ["soft", "hard"])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_bptt_gradient_equals_manual_unrolling(reset, detach_reset):
    x = (torch.randn(5, 40, dtype=torch.float64) * 1.5).requires_grad_()
    decay_logit = torch.tensor(math.log(DECAY / (1 - DECAY)), dtype=torch.float64, requires_grad=True)
    p = LIFConfig(reset=reset, detach_reset=detach_reset, surrogate_alpha=4.0)
    w = torch.randn(5, 40, dtype=torch.float64)
    (lif_multistep(x, torch.sigmoid(decay_logit), p) * w).sum().backward()
    gx, gd = x.grad.clone(), decay_logit.grad.clone()
    x.grad = None
    decay_logit.grad = None
    (unrolled_bptt_grad(x, torch.sigmoid(decay_logit), 1.0, reset, detach_reset, 4.0) * w).sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gd, decay_logit.grad)


def test_learnable_decay_is_parameter_and_fixed_is_buffer():
    fixed, learnable = LIF(decay=0.3), LIF(decay=0.3, learnable_decay=True)
    assert not list(fixed.parameters()) and "decay_logit" in dict(fixed.named_buffers())
    assert [n for n, _ in learnable.named_parameters()] == ["decay_logit"]
    assert learnable.decay.item() == pytest.approx(0.3)


def test_no_state_survives_a_call():
    layer = LIF()
    x = torch.rand(4, 2, 8) * 2
    with use_pass(PassState("bptt", 4)):
        first = layer(x.flatten(0, 1))
        second = layer(x.flatten(0, 1))
    torch.testing.assert_close(first, second)


def test_bare_call_outside_a_pass_raises():
    with pytest.raises(RuntimeError, match="outside a pass"):
        LIF()(torch.zeros(3, 4))


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="decay"):
        LIF(decay=1.5)
    with pytest.raises(ValueError, match="reset"):
        LIFConfig(reset="medium")
    with pytest.raises(ValueError, match="alpha"):
        SigmoidSurrogate(0.0)
