"""The bfloat16 spike stage: convolutions on spikes in bf16 with weights cast once, everything
recorded in float32; the float32 path unchanged."""

import contextvars
import copy

import pytest
import torch
import torch.nn.functional as F

import esdsnn
from esdsnn.layers import Conv2d
from esdsnn.passes import PassState, run_spike, run_spike_stage, use_pass, use_spike_dtype
from esdsnn.runtime import precision


def _model():
    return esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)


def _spikes(*shape):
    return (torch.rand(*shape) < 0.3).to(torch.uint8)


def test_conv_on_packed_spikes_in_each_type_equals_the_plain_convolution():
    conv = Conv2d(8, 16, 3, padding=1)
    spikes = _spikes(3 * 4, 8, 6, 6)
    with torch.no_grad():
        with use_pass(PassState("spike", 3)):
            out32 = conv(spikes)
        with use_pass(PassState("spike", 3, spike_dtype=torch.bfloat16)):
            out16 = conv(spikes)
        steps = spikes.float().chunk(3)
        plain32 = torch.cat([F.conv2d(s, conv.weight, conv.bias, padding=1) for s in steps])
        plain16 = torch.cat(
            [F.conv2d(s.bfloat16(), conv.weight.bfloat16(), conv.bias.bfloat16(), padding=1) for s in steps]
        )
    assert torch.equal(out32, plain32)  # float32: today's path, bit for bit
    assert out16.dtype == torch.float32 and torch.equal(out16, plain16.float())
    assert not torch.equal(out16, out32)  # bf16 really ran
    torch.testing.assert_close(out16, out32, rtol=2e-2, atol=2e-2)


def test_float32_spike_stage_is_unchanged_by_the_setting(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # auto = float32 here
    model = _model()
    x = torch.randn(4, 1, 8, 8)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    logits_a, trace_a = run_spike_stage(a, x, 3)
    with use_spike_dtype("float32"):
        logits_b, trace_b = run_spike_stage(b, x, 3)
    assert torch.equal(logits_a, logits_b)
    for ra, rb in zip(trace_a.neurons.values(), trace_b.neurons.values()):
        assert torch.equal(ra.rate, rb.rate) and torch.equal(ra.eligibility, rb.eligibility)


def test_bf16_spike_stage_records_in_float32_close_to_float32():
    torch.manual_seed(3)
    model = _model()
    x = torch.randn(16, 1, 8, 8)
    with use_spike_dtype("float32"):
        _, trace32 = run_spike_stage(copy.deepcopy(model), x, 4)
    with use_spike_dtype("bf16"):
        _, trace16 = run_spike_stage(copy.deepcopy(model), x, 4)
    agree, total = 0, 0
    for r32, r16 in zip(trace32.neurons.values(), trace16.neurons.values()):
        assert r16.rate.dtype == r16.eligibility.dtype == torch.float32
        agree += (r32.rate == r16.rate).sum().item()
        total += r32.rate.numel()
    assert 0.9 < agree / total < 1.0  # bf16 moved a few membranes across θ, and only a few
    norms32, norms16 = list(trace32.norms.values()), list(trace16.norms.values())
    assert norms16[0].mean.dtype == torch.float32
    torch.testing.assert_close(norms16[0].mean, norms32[0].mean, rtol=0, atol=0)  # the stem sees the image: float32
    # the first conv on spikes sees the same spikes in both: its statistics differ by bf16 rounding only
    n32, n16 = norms32[1], norms16[1]
    assert not torch.equal(n16.mean, n32.mean)
    assert ((n16.mean - n32.mean).abs() / n32.var.sqrt()).max() < 0.01
    assert ((n16.var - n32.var).abs() / n32.var).max() < 0.02
    for n32, n16 in zip(norms32[2:], norms16[2:]):  # deeper: also the few spikes that moved upstream
        assert ((n16.mean - n32.mean).abs() / n32.var.sqrt().clamp_min(1e-3)).max() < 0.25


def test_weights_cast_once_per_optimiser_step(monkeypatch):
    model = _model()
    x = torch.randn(2, 1, 8, 8)
    conv = model.stages[0][0].conv1[0]
    with use_spike_dtype("bf16"):
        run_spike_stage(model, x, 2)
        first = conv.__dict__["_cast_cache"][1]
        run_spike_stage(model, x, 2)
        assert conv.__dict__["_cast_cache"][1] is first  # no new cast without a weight change
        with torch.no_grad():
            conv.weight.add_(0.5)  # what an optimiser step does
        run_spike_stage(model, x, 2)
        again = conv.__dict__["_cast_cache"][1]
    assert again is not first and torch.equal(again, conv.weight.detach().bfloat16())


def test_bf16_autocast_uses_the_cast_once_path():
    model = _model().eval()
    x = torch.randn(3, 1, 8, 8)
    with use_spike_dtype("bf16"):
        expected = run_spike(model, x, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run_spike(model, x, 3)
    assert "_cast_cache" in model.stages[0][0].conv1[0].__dict__
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)


def test_auto_follows_native_support(monkeypatch):
    for native in (False, True):
        monkeypatch.setattr(precision, "native_bf16", lambda device, native=native: native)
        with use_spike_dtype("auto"):
            assert precision.spike_dtype_for("cpu") == (torch.bfloat16 if native else None)
        # the default (a fresh context) is float32 on every device, native bf16 or not
        assert contextvars.Context().run(precision.spike_dtype_for, "cpu") is None
        with use_spike_dtype("float32"):
            assert precision.spike_dtype_for("cpu") is None
    with pytest.raises(ValueError):
        with use_spike_dtype("fp8"):
            pass
