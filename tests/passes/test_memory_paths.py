"""Memory-saving paths (compact and in-place spikes, in-place BN, in-place residual sums, fused BN
statistics, the lean inference pass) change nothing."""
import copy

import pytest
import torch

import esdsnn
from esdsnn.layers import RateBatchNorm2d
from esdsnn.neurons import LIF, LIFParams, lif_multistep, lif_rate_eligibility, lif_spikes
from esdsnn.passes import run_bptt, run_spike
from esdsnn.passes.ratebp import run_spike_stage


@pytest.mark.parametrize("reset,detach", [("soft", True), ("soft", False), ("hard", True), ("hard", False)])
def test_inplace_functional_paths_equal_plain(reset, detach):
    p = LIFParams(reset=reset, detach_reset=detach, threshold=0.8, v_reset=0.0)
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


def without_inplace(model):
    """The same model with every memory-saving switch off (float spikes, out-of-place BN)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, (LIF, RateBatchNorm2d)):
            m.inplace = False
        if isinstance(m, LIF):
            m.compact = False
    return twin


@pytest.mark.parametrize("arch,shape", [("resnet19", (3, 16, 16)), ("vggsnn", (2, 16, 16)), ("preact_resnet34", (3, 32, 32))])
def test_inplace_models_record_and_train_identically(arch, shape):
    model = esdsnn.create_model(arch, num_classes=10, in_channels=shape[0])
    assert any(m.compact for m in model.modules() if isinstance(m, LIF))
    assert any(m.inplace for m in model.modules() if isinstance(m, RateBatchNorm2d))
    plain = without_inplace(model)
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    # the spike stage's records: rates, eligibilities and BN statistics, bit for bit
    (logits_a, trace_a), (logits_b, trace_b) = (run_spike_stage(copy.deepcopy(m), x, 3) for m in (model, plain))
    assert torch.equal(logits_a, logits_b) and len(trace_a.neurons) == len(trace_b.neurons) > 0
    for a_rec, b_rec in zip([*trace_a.neurons.values(), *trace_a.norms.values()],
                            [*trace_b.neurons.values(), *trace_b.norms.values()]):
        assert all(torch.equal(u, v) for u, v in zip(vars(a_rec).values(), vars(b_rec).values()))
    a, b = esdsnn.create_method("esd", model, T=3), esdsnn.create_method("esd", plain, T=3)
    b.load_state_dict(a.state_dict())
    out_a, out_b = a(x, y), b(x, y)
    out_a.loss.backward()
    out_b.loss.backward()
    assert torch.equal(out_a.loss, out_b.loss)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(u, v), name
    assert torch.equal(esdsnn.predict(model, x, T=3), esdsnn.predict(plain, x, T=3))


def test_inference_pass_equals_bptt_forward():
    model = esdsnn.create_model("resnet18", num_classes=10).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        reference, _ = run_bptt(model, x, T=4)
    assert torch.equal(run_spike(model, x, T=4), reference)


def test_compact_spikes_are_one_byte_between_convs_and_float_into_the_head():
    from esdsnn.passes import PassState, Trace, use_pass

    model = esdsnn.create_model("resnet19", num_classes=10)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            m.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.dtype))
    with torch.no_grad(), use_pass(PassState("record", 2, Trace(2))):
        model(torch.randn(2 * 2, 3, 8, 8))
    last_block = [n for n in seen if n.startswith("stages.")][-1]
    assert seen[last_block] == torch.float32 and seen["head.3"] == torch.float32
    assert {d for n, d in seen.items() if n not in (last_block, "head.3")} == {torch.uint8}


def test_stepwise_conv_equals_one_call():
    from esdsnn.layers import Conv2d
    from esdsnn.passes import PassState, use_pass

    conv = Conv2d(4, 6, 3, padding=1)
    x = torch.randn(3 * 5, 4, 9, 9)
    with torch.no_grad():
        reference = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
        for kind in ("infer", "record"):
            with use_pass(PassState(kind, 3, esdsnn.passes.Trace(3))):
                torch.testing.assert_close(conv(x), reference, rtol=1e-6, atol=1e-6)
