"""The fused BPTT neuron (one autograd node) against the autograd loop and SpikingJelly's LIFNode."""

import pytest
import torch

import esdsnn
from esdsnn.neurons import LIF, LIFConfig, lif_multistep
from esdsnn.neurons.fused import lif_multistep_fused
from esdsnn.neurons.lif import EAGER_KERNELS, LIFKernels, lif_rate_eligibility, lif_spikes
from esdsnn.passes import run_bptt

ROWS = [("soft", True), ("soft", False), ("hard", True), ("hard", False)]


def _values_and_grads(fn, x, decay_logit, p, learnable, grad_out):
    x = x.detach().clone().requires_grad_()
    logit = decay_logit.detach().clone().requires_grad_(learnable)
    decay = torch.sigmoid(logit) if learnable else float(torch.sigmoid(logit))
    spikes = fn(x, decay, p)
    grads = torch.autograd.grad((spikes * grad_out).sum(), [x, logit] if learnable else [x])
    return spikes, grads


@pytest.mark.parametrize("reset,detach_reset", ROWS)
@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("T", [1, 6])
def test_fused_equals_autograd_loop(reset, detach_reset, learnable, T):
    p = LIFConfig(reset=reset, detach_reset=detach_reset, v_reset=-0.3 if reset == "hard" else 0.0, threshold=0.8)
    x = torch.randn(T, 3, 5, 4, dtype=torch.float64) * 1.5 + 0.4
    grad_out = torch.randn_like(x)
    logit = torch.tensor(0.3, dtype=torch.float64)
    s_loop, g_loop = _values_and_grads(lif_multistep, x, logit, p, learnable, grad_out)
    s_fused, g_fused = _values_and_grads(lif_multistep_fused, x, logit, p, learnable, grad_out)
    assert 0.1 < s_loop.mean() < 0.9  # fires and stays silent: the reset rows matter
    assert torch.equal(s_fused, s_loop)
    assert g_loop[0].abs().max() > 0
    if learnable and (T > 1 or reset == "hard"):  # at T = 1 a soft reset starts from u_0 = 0: no decay gradient
        assert g_loop[1].abs() > 0
    for a, b in zip(g_fused, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_fused_in_float32_and_bfloat16_activations():
    p = LIFConfig(reset="soft", detach_reset=False)
    x = torch.randn(5, 64) * 1.5 + 0.4
    g = torch.randn_like(x)
    for dtype in (torch.float32, torch.bfloat16):
        xs = x.to(dtype)
        s_loop, (g_loop,) = _values_and_grads(lif_multistep, xs, torch.tensor(0.0), p, False, g.to(dtype))
        s_fused, (g_fused,) = _values_and_grads(lif_multistep_fused, xs, torch.tensor(0.0), p, False, g.to(dtype))
        assert s_fused.dtype == g_fused.dtype == dtype
        assert torch.equal(s_fused, s_loop)
        torch.testing.assert_close(g_fused, g_loop, rtol=1e-5 if dtype == torch.float32 else 1e-2, atol=1e-6)


@pytest.mark.parametrize("reset,detach_reset", ROWS)
def test_fused_equals_spikingjelly(reset, detach_reset):
    neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
    surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")
    decay = 0.25
    sj = neuron.LIFNode(
        tau=1.0 / (1.0 - decay),
        decay_input=False,
        v_threshold=1.0,
        v_reset=0.0 if reset == "hard" else None,
        detach_reset=detach_reset,
        surrogate_function=surrogate.Sigmoid(alpha=4.0),
        step_mode="m",
    ).double()
    x = (torch.randn(6, 4, 9, dtype=torch.float64) * 1.5 + 0.5).requires_grad_()
    g = torch.randn_like(x)
    s_sj = sj(x)
    (gx_sj,) = torch.autograd.grad((s_sj * g).sum(), x)
    p = LIFConfig(decay=decay, reset=reset, detach_reset=detach_reset)
    s = lif_multistep_fused(x, decay, p)
    (gx,) = torch.autograd.grad((s * g).sum(), x)
    assert torch.equal(s, s_sj.detach())
    torch.testing.assert_close(gx, gx_sj, rtol=1e-10, atol=1e-12)


def test_bptt_runs_one_node_per_layer_and_equals_the_loop_on_a_model():
    """The model's BPTT pass uses the fused node by default, and its parameter gradients equal
    those of the autograd loop (learnable decay included)."""
    model = esdsnn.create_model(
        "digits_resnet", num_classes=10, in_channels=1, neuron=LIFConfig(learnable_decay=True, detach_reset=False)
    ).double()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    lif = next(m for m in model.modules() if isinstance(m, LIF))
    seen = []
    handle = lif.register_forward_hook(lambda m, i, o: seen.append(type(o.grad_fn.next_functions[0][0]).__name__))
    grads = []
    for kernels in (EAGER_KERNELS, LIFKernels(lif_multistep, lif_rate_eligibility, lif_spikes)):
        for m in model.modules():
            if isinstance(m, LIF):
                m.kernels = kernels
        model.zero_grad()
        logits, _ = run_bptt(model, x, 4)
        logits.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    handle.remove()
    assert seen == ["_FusedLIFBackward", "StackBackward0"]  # one node for all steps vs the unrolled loop
    assert any("decay_logit" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-11, msg=name)
