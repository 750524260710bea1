"""Memory-saving paths (packed spikes, in-place BN, in-place residual sums, fused BN statistics,
the lean inference pass) change nothing."""

import copy

import pytest
import torch

import esdsnn
from esdsnn.layers import PackedSpikes, RateBatchNorm2d
from esdsnn.neurons import LIF, LIFConfig, lif_multistep, lif_rate_eligibility, lif_spikes
from esdsnn.passes import MemorySaving, run_bptt, run_spike
from esdsnn.passes.ratebp import run_spike_stage


@pytest.mark.parametrize("reset,detach", [("soft", True), ("soft", False), ("hard", True), ("hard", False)])
def test_inplace_functional_paths_equal_plain(reset, detach):
    p = LIFConfig(reset=reset, detach_reset=detach, threshold=0.8, v_reset=0.0)
    x = torch.randn(6, 300) * 1.3 + 0.4
    plain_spikes, plain_rate, plain_e = lif_rate_eligibility(x.clone(), 0.3, p)
    buf = x.clone()
    spikes, rate, e = lif_rate_eligibility(buf, 0.3, p, out=buf)
    assert spikes.data_ptr() == buf.data_ptr()
    assert torch.equal(spikes, plain_spikes) and torch.equal(rate, plain_rate) and torch.equal(e, plain_e)
    buf = x.clone()
    assert torch.equal(lif_spikes(buf, 0.3, p, out=buf), plain_spikes)
    assert torch.equal(lif_multistep(x, 0.3, p), plain_spikes)
    compact = torch.empty(x.shape, dtype=torch.uint8)  # 1-byte spikes
    spikes, rate, e = lif_rate_eligibility(x.clone(), 0.3, p, out=compact)
    assert spikes.dtype == torch.uint8 and torch.equal(spikes.float(), plain_spikes)
    assert torch.equal(rate, plain_rate) and torch.equal(e, plain_e)
    assert torch.equal(lif_spikes(x.clone(), 0.3, p, out=torch.empty_like(compact)).float(), plain_spikes)


SWITCHES = [
    MemorySaving(compact_spikes=False),
    MemorySaving(inplace_norm=False),
    MemorySaving(inplace_residual=False),
    MemorySaving(compact_spikes=False, inplace_norm=False, inplace_residual=False),
]


def records(trace):
    return [vars(r) for r in (*trace.neurons.values(), *trace.norms.values())]


def train_step(method, x, y):
    out = method(x, y)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad for n, p in method.named_parameters()}, method.state_dict()


CASES = [  # one by one on a residual model, all together on each architecture
    *[("resnet19", (3, 8, 8), plain) for plain in SWITCHES],
    ("vggsnn", (2, 16, 16), SWITCHES[-1]),
    ("preact_resnet34", (3, 32, 32), SWITCHES[-1]),
]


@pytest.mark.parametrize(
    "arch,shape,plain", CASES, ids=["no-compact", "no-inplace-norm", "no-inplace-residual", "all-off", "vgg", "preact"]
)
def test_memory_saving_paths_record_and_train_identically(arch, shape, plain):
    """Each memory-saving path switched off on its own (and all together) gives bit-identical
    spike-stage records, logits, gradients, running statistics and predictions, in the no-grad
    passes and under autograd (BPTT, where the in-place residual also runs)."""
    model = esdsnn.create_model(arch, num_classes=10, in_channels=shape[0])
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    lean, twin = copy.deepcopy(model), copy.deepcopy(model)
    (logits_a, trace_a), (logits_b, trace_b) = run_spike_stage(lean, x, 3), run_spike_stage(twin, x, 3, memory=plain)
    assert torch.equal(logits_a, logits_b) and len(trace_a.neurons) == len(trace_b.neurons) > 0
    for a_rec, b_rec in zip(records(trace_a), records(trace_b)):
        assert all(torch.equal(u, v) for u, v in zip(a_rec.values(), b_rec.values()))
    for name in ("esd", "esd-bptt"):
        a = esdsnn.create_method(name, copy.deepcopy(model), T=3)
        b = esdsnn.create_method(name, copy.deepcopy(model), T=3)
        b.load_state_dict(a.state_dict())
        b.memory = plain
        (loss_a, grads_a, state_a), (loss_b, grads_b, state_b) = train_step(a, x, y), train_step(b, x, y)
        assert torch.equal(loss_a, loss_b), name
        for k in grads_a:
            assert torch.equal(grads_a[k], grads_b[k]), (name, k)
        for k in state_a:
            assert torch.equal(state_a[k], state_b[k]), (name, k)
    model.eval()
    assert torch.equal(run_spike(model, x, 3), run_spike(model, x, 3, memory=plain))


def test_the_memory_saving_paths_actually_run():
    """Else the test above would compare the plain path with itself."""
    model = esdsnn.create_model("resnet19", num_classes=10)
    outputs, inplace_norms, residuals = [], [], []
    for m in model.modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda m, i, out: outputs.append(type(out)))
        if isinstance(m, RateBatchNorm2d):
            m.register_forward_hook(lambda m, i, out: inplace_norms.append(out.data_ptr() == i[0].data_ptr()))
    import esdsnn.models.resnet as resnet

    real_add = resnet.add_residual

    def add(out, shortcut):
        result = real_add(out, shortcut)
        residuals.append(result.data_ptr() == out.data_ptr())
        return result

    resnet.add_residual = add
    try:
        run_spike_stage(model, torch.randn(2, 3, 8, 8), 2)
    finally:
        resnet.add_residual = real_add
    assert set(outputs) == {PackedSpikes} and any(inplace_norms) and all(residuals) and residuals
    outputs.clear(), inplace_norms.clear(), residuals.clear()
    resnet.add_residual = add
    try:
        run_spike_stage(model, torch.randn(2, 3, 8, 8), 2, memory=SWITCHES[-1])
    finally:
        resnet.add_residual = real_add
    assert torch.Tensor in set(outputs) and PackedSpikes not in set(outputs)
    assert not any(inplace_norms) and not any(residuals)


def test_inference_pass_equals_bptt_forward():
    model = esdsnn.create_model("resnet18", num_classes=10).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        reference, _ = run_bptt(model, x, T=4)
    assert torch.equal(run_spike(model, x, T=4), reference)


def test_packed_spikes_are_one_byte_and_read_as_floats_by_any_layer():
    """Neurons return packed spikes in the no-grad passes; stock torch layers after them (pooling,
    flatten, linear) see the floats they would have seen."""
    from esdsnn.passes import PassState, Trace, use_pass

    model = esdsnn.create_model("resnet19", num_classes=10)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out))
    with torch.no_grad(), use_pass(PassState("spike_stage", 2, Trace(2))):
        model(torch.randn(2 * 2, 3, 8, 8))
    assert seen and all(isinstance(s, PackedSpikes) and s.packed.dtype == torch.uint8 for s in seen.values())
    spikes = seen["head.3"]
    assert spikes.dtype == torch.float32 and spikes.is_floating_point()
    floats = spikes.unpack()
    assert set(floats.unique().tolist()) <= {0.0, 1.0}
    linear = torch.nn.Linear(floats.shape[1], 3)
    assert torch.equal(linear(spikes), linear(floats)) and type(linear(spikes)) is torch.Tensor
    pooled = torch.nn.AdaptiveAvgPool2d(1)(seen["stages.2.1.lif2"])
    assert torch.equal(pooled, torch.nn.AdaptiveAvgPool2d(1)(seen["stages.2.1.lif2"].unpack()))
    assert isinstance(spikes.view(2, 2, -1), PackedSpikes) and isinstance(spikes[0], PackedSpikes)


def test_stepwise_conv_equals_one_call():
    from esdsnn.layers import Conv2d
    from esdsnn.passes import PassState, use_pass

    conv = Conv2d(4, 6, 3, padding=1)
    x = torch.randn(3 * 5, 4, 9, 9)
    with torch.no_grad():
        reference = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
        for kind in ("spike", "spike_stage"):
            with use_pass(PassState(kind, 3, esdsnn.passes.Trace(3))):
                torch.testing.assert_close(conv(x), reference, rtol=1e-6, atol=1e-6)
