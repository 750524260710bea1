"""SEW connections (esdsnn.layers.SpikeElementWise) in every pass: SpikingJelly's formulas on the
steps' spikes (packed or not), the recorded rate with the formula's gradient in RateBP's rate
stage, checked by hand from the spikes and the neurons' records."""

import pytest
import torch
from torch import nn

import esdsnn
from esdsnn.errors import ConfigError
from esdsnn.layers import SpikeElementWise
from esdsnn.passes import MemorySaving, run_bptt, run_rate_stage, run_spike, run_spike_stage

torch.set_num_threads(1)


class Gate(nn.Module):
    """Two LIF layers on the input and on 1.5 minus it, joined by one connection."""

    def __init__(self, connect):
        super().__init__()
        self.a, self.b = esdsnn.layers.LIF(decay=0.5), esdsnn.layers.LIF(decay=0.5)
        self.gate = SpikeElementWise(connect)

    def forward(self, x):
        return self.gate(self.a(x), self.b(1.5 - x)).flatten(1)  # a model returns [T·B, K]


def inputs(seed=4):
    return torch.rand(64, 5, 1, 1, generator=torch.Generator().manual_seed(seed)) * 2


def spikes_of(net, x, T):
    """The two layers' spikes ``[T, B, ...]`` in the spike pass."""
    seen = {}

    def keep(name):
        def hook(module, inputs, out):
            seen[name] = out.float().view(T, *x.shape)

        return hook

    hooks = [net.a.register_forward_hook(keep("a")), net.b.register_forward_hook(keep("b"))]
    run_spike(net, x, T)
    for hook in hooks:
        hook.remove()
    return seen["a"], seen["b"]


FORMULAS = {"ADD": lambda a, b: a + b, "AND": lambda a, b: a * b, "IAND": lambda a, b: a * (1 - b)}


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "float"])
@pytest.mark.parametrize("connect", list(FORMULAS))
def test_spike_pass_applies_spikingjellys_formula(connect, packed):
    net, x, T = Gate(connect), inputs(), 4
    a, b = spikes_of(net, x, T)
    assert 0 < float(a.mean()) < 1 and 0 < float(b.mean()) < 1
    memory = MemorySaving(compact_spikes=packed)
    torch.testing.assert_close(
        run_spike(net, x, T, memory=memory), FORMULAS[connect](a, b).mean(0).flatten(1), rtol=0, atol=0
    )
    with esdsnn.passes.use_pass(esdsnn.passes.PassState("spike", T, memory=memory)):
        out = net(x.repeat(T, 1, 1, 1))
    assert isinstance(out, esdsnn.layers.PackedSpikes) == (packed and connect != "ADD")


class Formula(nn.Module):
    """The same layers with IAND written out as a plain expression."""

    def __init__(self, gate):
        super().__init__()
        self.a, self.b = gate.a, gate.b

    def forward(self, x):
        return (self.a(x) * (1 - self.b(1.5 - x))).flatten(1)


def test_bptt_differentiates_the_formula():
    net = Gate("IAND")
    x = inputs().requires_grad_(True)
    out, _ = run_bptt(net, x, 3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    ref, _ = run_bptt(Formula(net), x, 3)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    assert float(grad.abs().max()) > 0
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)


def test_add_needs_no_record_and_is_exact_on_rates():
    net, x = Gate("ADD"), inputs()
    _, trace = run_spike_stage(net, x, 4)
    assert not trace.gates
    a, b = spikes_of(net, x, 4)
    out, _ = run_rate_stage(net, x, trace)
    torch.testing.assert_close(out, (a + b).mean(0).flatten(1), rtol=0, atol=1e-7)


def test_unknown_connect_function_is_refused():
    with pytest.raises(ConfigError, match="'OR' is unknown; one of ADD, AND, IAND"):
        SpikeElementWise("OR")


def test_sew_gate_rate_stage_is_the_recorded_rate_with_the_formulas_gradient():
    """The rate-stage rule by hand: value mean_t x_t·(1 − y_t), gradient (1 − r_y, −r_x) at the rates."""
    net, x = Gate("IAND"), inputs()
    a, b = spikes_of(net, x, 4)
    _, trace = run_spike_stage(net, x, 4)
    by_hand = (a * (1 - b)).mean(0)
    assert 0.05 < float(by_hand.mean()) < 0.95 and not torch.equal(by_hand, a.mean(0) * (1 - b.mean(0)))
    torch.testing.assert_close(trace.gate(net.gate), by_hand, rtol=0, atol=0)
    x_rate = x.clone().requires_grad_(True)
    out, _ = run_rate_stage(net, x_rate, trace)
    torch.testing.assert_close(out, by_hand.flatten(1), rtol=0, atol=0)
    out.sum().backward()
    ra, rb = trace.neuron(net.a), trace.neuron(net.b)
    # d/dx [r_a(x)·(1 − r_b(1.5 − x))] = e_a·(1 − r_b) + r_a·e_b
    want = ra.eligibility * (1 - rb.rate) + ra.rate * rb.eligibility
    torch.testing.assert_close(x_rate.grad, want, rtol=1e-6, atol=1e-7)
