"""RateBatchNorm2d in RateBP's two stages (SPEC §3) against independent references.

Rate stage: a hand-made record whose mean/var differ clearly from the rate batch's own statistics;
the output value is checked against the closed form with the recorded statistics, and the
gradient against a Jacobian of the straight-through rule derived by hand and computed in NumPy,
for the layer's elementwise chain (float32/float64) and for its two-kernel form (half types,
``bf16-mixed``), which computes the same maths in any type.
Spike stage: recorded statistics and running statistics against torch's own ``nn.BatchNorm2d``.
"""

import numpy as np
import pytest
import torch
from torch import nn

from esdsnn.layers import RateBatchNorm2d
from esdsnn.layers.rate_norm import _RecordedStatsNorm
from esdsnn.passes import NormRecord, PassState, Trace, use_pass

torch.set_num_threads(1)

B, C, H, W = 3, 2, 2, 3  # N = B·H·W = 18 values per channel
EPS = 1e-5


def make_bn():
    bn = RateBatchNorm2d(C, eps=EPS).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.7, -0.6], dtype=torch.float64))
        bn.bias.copy_(torch.tensor([0.3, -1.1], dtype=torch.float64))
        # distinctive running statistics, so that "untouched" is not "still at the defaults"
        bn.running_mean.copy_(torch.tensor([0.25, -0.5], dtype=torch.float64))
        bn.running_var.copy_(torch.tensor([2.0, 0.75], dtype=torch.float64))
        bn.num_batches_tracked.fill_(7)
    return bn


def rate_batch():
    # per-channel offsets and scales, so the batch statistics are far from the record's
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    return x * torch.tensor([0.5, 2.0], dtype=torch.float64).view(1, C, 1, 1) + torch.tensor(
        [1.0, -0.4], dtype=torch.float64
    ).view(1, C, 1, 1)


# recorded (spike-stage) statistics: clearly not those of the rate batch
M_REC = np.array([0.2, 0.9])
V_REC = np.array([1.3, 0.4])


def hand_made_trace(bn):
    trace = Trace(T=4)  # a rate stage that follows a T = 4 spike stage
    trace.norms[bn] = NormRecord(torch.tensor(M_REC), torch.tensor(V_REC))
    return trace


def channel_values(x, c):
    """The N values of channel c, in the order of ``x[:, c].flatten()``."""
    return x[:, c].reshape(-1)


def hand_jacobian(xc, m, v, gamma, eps):
    """d out_i / d x_j of one channel under the straight-through rule (SPEC §3), by hand:

    m = m_rec + (mean(x) − mean(x).detach()), v = v_rec + (var(x; m) − var(x; m).detach()),
    var(x; m) = mean((x − m)²), out = γ (x − m)/sqrt(v + eps) + β. Values at m = m_rec, v = v_rec:
    dm/dx_j = 1/N, dv/dx_j = (2/N)(x_j − m) − (2/N²) Σ_i (x_i − m)  (Σ_i (x_i − m) ≠ 0 here),
    d out_i/dx_j = γ [(δ_ij − 1/N)/s − (x_i − m)·dv/dx_j / (2 s³)], s = sqrt(v + eps).
    (dv/dx_j simplifies to (2/N)(x_j − mean(x)), so centring var(x; ·) on the batch's own mean
    gives the same gradient; centring it on a detached m does not: it drops the Σ term.)
    """
    n = xc.size
    s = np.sqrt(v + eps)
    d = xc - m
    dv = (2.0 / n) * d - (2.0 / n**2) * d.sum()
    return gamma * ((np.eye(n) - 1.0 / n) / s - np.outer(d, dv) / (2.0 * s**3))


def rate_stage(bn, x, path):
    """The rate stage's BatchNorm of ``x``: through the layer (float64: the elementwise chain) or
    its two-kernel form (what the layer runs on half types) called directly in float64."""
    if path == "layer":
        with use_pass(PassState("rate_stage", 1, hand_made_trace(bn))):
            return bn(x)
    return _RecordedStatsNorm.apply(x, torch.tensor(M_REC), torch.tensor(V_REC), bn.weight, bn.bias, EPS)


PATHS = ["layer", "two_kernels"]


@pytest.mark.parametrize("path", PATHS)
def test_rate_stage_value_uses_the_recorded_statistics(path):
    bn = make_bn()
    x = rate_batch()
    own_mean = x.mean(dim=(0, 2, 3)).numpy()
    own_var = x.var(dim=(0, 2, 3), unbiased=False).numpy()
    assert np.all(np.abs(own_mean - M_REC) > 0.3) and np.all(np.abs(own_var - V_REC) > 0.3)
    out = rate_stage(bn, x, path)
    xn = x.numpy()
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    view = (1, C, 1, 1)
    expected = (xn - M_REC.reshape(view)) / np.sqrt(V_REC.reshape(view) + EPS) * gamma.reshape(view) + beta.reshape(
        view
    )
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_rate_stage_gradient_is_the_hand_derived_straight_through_jacobian(path):
    bn = make_bn()
    buffers = {k: v.clone() for k, v in bn.named_buffers()}
    x = rate_batch().requires_grad_()
    upstream = torch.randn(B, C, H, W, dtype=torch.float64)
    out = rate_stage(bn, x, path)
    (out * upstream).sum().backward()

    xn, gn = x.detach().numpy(), upstream.numpy()
    gamma = bn.weight.detach().numpy()
    for c in range(C):
        xc, gc = channel_values(xn, c), channel_values(gn, c)
        assert abs((xc - M_REC[c]).sum()) > 1.0  # the Σ(x_i − m) term matters
        jac = hand_jacobian(xc, M_REC[c], V_REC[c], gamma[c], EPS)
        want_x = gc @ jac  # Σ_i g_i d out_i/dx_j
        got_x = channel_values(x.grad.numpy(), c)
        np.testing.assert_allclose(got_x, want_x, rtol=1e-10, atol=1e-12 * np.abs(want_x).max())
        s = np.sqrt(V_REC[c] + EPS)
        want_w = (gc * (xc - M_REC[c]) / s).sum()  # d out_i/dγ = (x_i − m)/s
        assert bn.weight.grad[c].item() == pytest.approx(want_w, rel=1e-10)
        assert bn.bias.grad[c].item() == pytest.approx(gc.sum(), rel=1e-10)
    # running statistics (and the batch counter) are untouched in the rate stage
    for k, v in bn.named_buffers():
        assert torch.equal(v, buffers[k]), f"rate stage changed {k}"


@pytest.mark.parametrize("affine", [True, False])
def test_bf16_rate_stage_takes_the_two_kernels_and_rounds_like_autocast(affine):
    """A bfloat16 rate batch (bf16-mixed): bf16 output, float32 parameter gradients, value and
    gradients those of the float64 chain on the same (bf16-representable) values to bf16 rounding."""
    ref = make_bn() if affine else RateBatchNorm2d(C, eps=EPS, affine=False).double()
    bn = RateBatchNorm2d(C, eps=EPS, affine=affine)
    bn.load_state_dict(ref.state_dict())
    x = rate_batch().bfloat16().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    upstream = torch.randn(B, C, H, W, dtype=torch.float64)
    trace = Trace(T=4)
    trace.norms[bn] = NormRecord(torch.tensor(M_REC, dtype=torch.float32), torch.tensor(V_REC, dtype=torch.float32))
    with use_pass(PassState("rate_stage", 1, trace)):
        out = bn(x)
    (out.double() * upstream).sum().backward()
    with use_pass(PassState("rate_stage", 1, hand_made_trace(ref))):
        want = ref(x64)
    (want * upstream).sum().backward()
    assert out.dtype == x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), want.detach(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=2e-2, atol=2e-2 * x64.grad.abs().max().item())
    if affine:
        assert bn.weight.grad.dtype == bn.bias.grad.dtype == torch.float32
        torch.testing.assert_close(bn.weight.grad.double(), ref.weight.grad, rtol=2e-2, atol=1e-3)
        torch.testing.assert_close(bn.bias.grad.double(), ref.bias.grad, rtol=2e-2, atol=1e-3)


def test_spike_stage_records_all_steps_and_updates_running_stats_once():
    """T·B folded samples with different steps: the record is their per-channel mean and biased
    variance, the output and running statistics those of torch's nn.BatchNorm2d on the same
    activations (one update)."""
    T = 3
    x = (
        torch.randn(T * B, C, H, W, dtype=torch.float64) * 1.5
        + torch.arange(T * B, dtype=torch.float64).view(-1, 1, 1, 1) * 0.1
    )
    for inplace in (False, True):
        bn = make_bn()
        bn.inplace = inplace
        ref = nn.BatchNorm2d(C, eps=EPS).double().train()
        ref.load_state_dict(bn.state_dict())
        want = ref(x)
        trace = Trace(T)
        with torch.no_grad(), use_pass(PassState("spike_stage", T, trace)):
            got = bn(x.clone())
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        record = trace.norm(bn)
        torch.testing.assert_close(record.mean, x.mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(record.var, x.var(dim=(0, 2, 3), unbiased=False), rtol=1e-10, atol=1e-12)
        for (name, a), (_, b) in zip(bn.named_buffers(), ref.named_buffers()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")
        assert int(bn.num_batches_tracked) == 8
