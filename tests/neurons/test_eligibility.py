"""The spike stage's eligibility is ∂(mean_t s_t)/∂x for a constant input, by autograd (SPEC §3)."""

import pytest
import torch

from esdsnn.neurons import LIFConfig, lif_multistep, lif_rate_eligibility


@pytest.mark.parametrize("surrogate,alpha", [("sigmoid", 4.0), ("atan", 2.0)])
@pytest.mark.parametrize("T", [1, 3, 8])
@pytest.mark.parametrize("reset,detach_reset", [("soft", True), ("soft", False), ("hard", True), ("hard", False)])
@pytest.mark.parametrize("decay", [0.35, 1.0])  # 1: an integrate-and-fire neuron
def test_eligibility_equals_autograd_rate_derivative(T, reset, detach_reset, surrogate, alpha, decay):
    """One surrogate object serves both: BPTT's autograd through it and RateBP's eligibility."""
    p = LIFConfig(reset=reset, detach_reset=detach_reset, v_reset=0.0, surrogate=surrogate, surrogate_alpha=alpha)
    x = torch.randn(300, dtype=torch.float64) * 1.2 + 0.6
    x_const = x.clone().requires_grad_()
    rate = lif_multistep(x_const.expand(T, -1), decay, p).mean(0)
    (grad,) = torch.autograd.grad(rate.sum(), x_const)  # each neuron's rate depends only on its x
    _, recorded_rate, eligibility = lif_rate_eligibility(x.expand(T, -1).clone(), decay, p)
    torch.testing.assert_close(recorded_rate, rate.detach())
    torch.testing.assert_close(eligibility, grad)


def test_hard_reset_with_nonzero_v_reset():
    p = LIFConfig(reset="hard", detach_reset=False, v_reset=-0.3)
    x = torch.randn(200, dtype=torch.float64) + 0.8
    xc = x.clone().requires_grad_()
    rate = lif_multistep(xc.expand(5, -1), 0.5, p).mean(0)
    (grad,) = torch.autograd.grad(rate.sum(), xc)
    _, r, e = lif_rate_eligibility(x.expand(5, -1).clone(), 0.5, p)
    torch.testing.assert_close(r, rate.detach())
    torch.testing.assert_close(e, grad)


def test_hand_computed_eligibility_soft_detached():
    # x = 0.6, λ = 0.5, θ = 1, α = 4, T = 2: h0 = 0.6 (no spike), h1 = 0.9 (no spike)
    # κ0 = 1, κ1 = 1 + λ·1 = 1.5; e = (σ'(-0.4) + 1.5·σ'(-0.1)) / 2
    def sg(v):
        g = torch.sigmoid(torch.tensor(4.0 * v, dtype=torch.float64))
        return 4.0 * g * (1 - g)

    expected = (sg(-0.4) + 1.5 * sg(-0.1)) / 2
    _, rate, e = lif_rate_eligibility(torch.full((2, 1), 0.6, dtype=torch.float64), 0.5, LIFConfig())
    assert rate.item() == 0.0
    assert e.item() == pytest.approx(expected.item(), rel=1e-12)


def test_atan_derivative_by_hand():
    # SpikingJelly's ATan: σ'(v) = (α/2) / (1 + (π/2·α·v)²); at v = 0.1, α = 2: 1 / (1 + (0.1π)²)
    from esdsnn.neurons import AtanSurrogate

    v = torch.tensor([0.1, -0.3], dtype=torch.float64)
    expected = 1.0 / (1.0 + (torch.pi * v) ** 2)
    torch.testing.assert_close(AtanSurrogate(2.0).derivative(v), expected)
    torch.testing.assert_close(AtanSurrogate(2.0).derivative_(v.clone()), expected)
