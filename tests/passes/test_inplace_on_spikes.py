"""A user's layer that writes in place on a neuron's output (``x[:, 0] = 0``) gives the same results
in every pass: inference and RateBP's spike stage (packed 1-byte spikes) as with packing off and as
BPTT (float spikes). A write that 0/1 bytes cannot hold raises one line naming the fix."""

import copy

import pytest
import torch
from torch import nn

import esdsnn
from esdsnn import layers as snn
from esdsnn.errors import EsdsnnError
from esdsnn.passes import MemorySaving, run_bptt, run_spike
from esdsnn.passes.ratebp import run_spike_stage

UNPACKED = MemorySaving(compact_spikes=False)


class SilenceChannel(nn.Module):
    """Sets channel 0 of its input to ``value`` in place (what the issue's user layer did)."""

    def __init__(self, value: float = 0.0, copy_first: bool = False):
        super().__init__()
        self.value, self.copy_first = value, copy_first

    def forward(self, x):
        if self.copy_first:
            x = x.float()  # the fix the error names
        x[:, 0] = self.value
        return x


def user_net(layer=None):
    torch.manual_seed(3)
    net = nn.Sequential(
        snn.Conv2d(1, 4, 3, padding=1),
        snn.BatchNorm2d(4),
        snn.LIF(),
        layer or SilenceChannel(),
        snn.Conv2d(4, 4, 3, padding=1),
        snn.BatchNorm2d(4),
        snn.LIF(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )
    with torch.no_grad():  # channel 0 fires often before the layer silences it
        net[0].bias[0] = 2.0
        net[4].weight[:, 0] = 0.5
    return net


def inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.rand((2, 1, 8, 8), generator=gen) * 2, torch.tensor([0, 2])


def test_the_write_matters_here():
    """Without the write the logits differ: the tests below can tell a lost write from a kept one."""
    x, _ = inputs()
    with torch.no_grad():
        with_write = run_spike(user_net().eval(), x, 3, memory=UNPACKED)
        without = run_spike(user_net(nn.Identity()).eval(), x, 3, memory=UNPACKED)
    assert (with_write - without).abs().max() > 0.1


def test_inference_with_packed_spikes_equals_unpacked_and_bptt():
    x, _ = inputs()
    net = user_net().eval()
    packed = esdsnn.predict(net, x, T=3)
    with torch.no_grad():
        unpacked = run_spike(net, x, 3, memory=UNPACKED)
        bptt, _ = run_bptt(net, x, 3)
    assert torch.equal(packed, unpacked)
    torch.testing.assert_close(packed, bptt, rtol=1e-5, atol=1e-5)


def test_ratebp_spike_stage_with_packed_spikes_equals_unpacked():
    x, y = inputs()
    (logits_a, trace_a), (logits_b, trace_b) = (
        run_spike_stage(user_net(), x, 3),
        run_spike_stage(user_net(), x, 3, memory=UNPACKED),
    )
    assert torch.equal(logits_a, logits_b)
    for a, b in zip(trace_a.neurons.values(), trace_b.neurons.values()):
        assert torch.equal(a.rate, b.rate) and torch.equal(a.eligibility, b.eligibility)
    results = []
    for memory in (MemorySaving(), UNPACKED):
        method = esdsnn.create_method("ratebp", user_net(), T=3)
        method.memory = memory
        out = method(x, y)
        out.loss.backward()
        results.append((out.loss.detach(), out.logits.detach(), [p.grad for p in method.parameters()]))
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = results
    assert torch.equal(loss_a, loss_b) and torch.equal(logits_a, logits_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_bptt_training_step_agrees_with_the_spike_stage():
    """BPTT (float spikes, autograd) and RateBP's spike stage see the same forward: logits equal
    to float rounding in training mode (batch statistics)."""
    x, y = inputs()
    bptt = esdsnn.create_method("bptt", user_net(), T=3)
    out = bptt(x, y)
    out.loss.backward()
    spike_logits, _ = run_spike_stage(user_net(), x, 3)
    torch.testing.assert_close(out.logits.detach(), spike_logits, rtol=1e-5, atol=1e-5)


def test_a_write_bytes_cannot_hold_raises_one_line_naming_the_fix():
    x, _ = inputs()
    with pytest.raises(EsdsnnError, match=r"x = x\.float\(\)") as raised:
        esdsnn.predict(user_net(SilenceChannel(0.5)), x, T=3)
    assert "\n" not in str(raised.value)
    fixed = user_net(SilenceChannel(0.5, copy_first=True))
    with torch.no_grad():
        unpacked = run_spike(copy.deepcopy(fixed).eval(), x, 3, memory=UNPACKED)
    assert torch.equal(esdsnn.predict(fixed, x, T=3), unpacked)
