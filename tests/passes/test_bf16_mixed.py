"""The spike stage under ``bf16-mixed``: activations stay bfloat16 as autocast makes them, with no
casts around the convolutions, so that RateBP rounds as BPTT does under the same autocast; the
records stay float32; evaluation (no autocast) is unchanged."""

import copy

import pytest
import torch
import torch.nn.functional as F

import esdsnn
from esdsnn.layers import Conv2d, PackedSpikes, RateBatchNorm2d
from esdsnn.neurons import LIF
from esdsnn.passes import MemorySaving, PassState, Trace, use_pass
from esdsnn.runtime.precision import autocast_for, use_precision

BF16 = torch.bfloat16


def _spikes(*shape):
    return (torch.rand(*shape) < 0.3).to(torch.uint8)


def _bf16_autocast():
    return torch.autocast("cpu", dtype=BF16)


def test_ratebp_at_T1_is_bptt_under_bf16_mixed():
    """At T = 1 RateBP equals BPTT (SPEC §3); under bf16-mixed both now round alike: the same
    loss and logits bit for bit (the same spikes everywhere), gradients equal to bf16 rounding.
    (Before: the spike stage's BatchNorm read float32 copies of the bf16 convolutions, so spikes
    moved and the gradients of the two had cosine 0.39 on this model.)"""
    torch.manual_seed(0)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    out, grads = {}, {}
    for name in ("ratebp", "bptt"):
        net = copy.deepcopy(model)
        method = esdsnn.create_method(name, net, T=1).train()
        with use_precision("bf16-mixed"), autocast_for("bf16-mixed", "cpu"):
            out[name] = method(x, y)
        out[name].loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert torch.equal(out["ratebp"].loss, out["bptt"].loss)
    assert torch.equal(out["ratebp"].logits, out["bptt"].logits)
    a, b = grads["ratebp"], grads["bptt"]
    assert (a - b).norm() / b.norm() < 0.02


def test_spike_stage_convolution_keeps_bf16_and_takes_all_steps_at_once():
    conv = Conv2d(8, 16, 3, padding=1, bias=True)
    spikes = _spikes(3 * 4, 8, 6, 6)
    with torch.no_grad():
        plain = F.conv2d(spikes.to(BF16), conv.weight.to(BF16), conv.bias.to(BF16), padding=1)
        with use_pass(PassState("spike_stage", 3, Trace(3), spike_dtype=BF16)):
            with _bf16_autocast():
                packed = conv(PackedSpikes(spikes, torch.float32))
                as_bf16 = conv(spikes.to(BF16))  # spikes a neuron fired in bf16
            evaluation = conv(spikes)  # the same pass without an autocast (evaluation)
    assert packed.dtype == as_bf16.dtype == BF16
    assert torch.equal(packed, plain) and torch.equal(as_bf16, plain)
    assert "_cast_cache" in conv.__dict__  # weights cast once, not by autocast at every call
    assert evaluation.dtype == torch.float32 and torch.equal(evaluation, plain.float())


def test_bf16_batchnorm_normalises_in_place_with_float32_statistics():
    x = (torch.randn(12, 5, 4, 4) * 2 + 0.5).to(BF16)
    results = {}
    for inplace in (True, False):
        bn = RateBatchNorm2d(5, inplace=True)
        trace = Trace(3)
        given = x.clone()
        with torch.no_grad(), use_pass(PassState("spike_stage", 3, trace, MemorySaving(inplace_norm=inplace))):
            out = bn(given)
        assert (out.data_ptr() == given.data_ptr()) == inplace
        results[inplace] = (out, trace.norm(bn), bn.running_mean.clone(), bn.running_var.clone())
    (a, rec_a, rm_a, rv_a), (b, rec_b, rm_b, rv_b) = results[True], results[False]
    assert a.dtype == BF16 and rec_a.mean.dtype == rec_a.var.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(rec_a.mean, rec_b.mean) and torch.equal(rec_a.var, rec_b.var)
    assert torch.equal(rm_a, rm_b) and torch.equal(rv_a, rv_b)
    x64 = x.double()  # the statistics of the bf16 values, accumulated in float32
    torch.testing.assert_close(rec_a.mean.double(), x64.mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rec_a.var.double(), x64.var((0, 2, 3), unbiased=False), rtol=1e-5, atol=1e-6)


def test_neurons_fire_bf16_spikes_under_the_autocast_and_packed_ones_without():
    lif = LIF()
    x = torch.randn(3 * 4, 6) + 0.5
    with torch.no_grad():
        with use_pass(PassState("spike_stage", 3, Trace(3))):
            packed = lif(x)
        with use_pass(PassState("spike_stage", 3, Trace(3))):
            in_bf16 = lif(x.to(BF16))
        with use_pass(PassState("spike_stage", 3, Trace(3))):
            widened = lif(x.to(BF16).float())
    assert isinstance(packed, PackedSpikes)
    assert type(in_bf16) is torch.Tensor and in_bf16.dtype == BF16
    assert torch.equal(in_bf16.float(), widened.unpack())  # the same spikes as float32 input of the same values


def test_bf16_mixed_records_float32_and_evaluation_is_unchanged():
    """The records RateBP's rate stage reads stay float32; the spike pass of evaluation (no
    autocast) still returns float32 convolutions and packed spikes."""
    from esdsnn.passes.ratebp import run_spike_stage
    from esdsnn.passes.spike import run_spike

    torch.manual_seed(1)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    with use_precision("bf16-mixed"), autocast_for("bf16-mixed", "cpu"):
        _, trace = run_spike_stage(model, x, 3)
    for record in trace.neurons.values():
        assert record.rate.dtype == record.eligibility.dtype == torch.float32
    for record in trace.norms.values():
        assert record.mean.dtype == record.var.dtype == torch.float32
    seen = []
    hook = model.stages[0][0].lif1.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, type(o))))
    with use_precision("bf16-mixed"):
        run_spike(model.eval(), x, 3)
    hook.remove()
    assert seen == [(torch.float32, PackedSpikes)]


@pytest.mark.parametrize("name", ["ratebp", "esd"])
def test_every_parameter_gets_a_gradient_under_bf16_mixed(name):
    """torch < 2.5 caches autocast's bf16 copies of the weights made in the no-grad spike stage and
    hands them to the rate stage, whose stem and classifier then got no gradient at all (seen on
    torch 2.4.1); the spike stage drops them."""
    torch.manual_seed(0)
    net = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    method = esdsnn.create_method(name, net, T=2).train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    with use_precision("bf16-mixed"), autocast_for("bf16-mixed", "cpu"):
        out = method(x, y)
    out.loss.backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(bool(torch.isfinite(p.grad).all()) for p in method.parameters() if p.grad is not None)
