"""The static-input shortcut (first conv + BN of a direct-encoded image computed on one copy)
against the general path over T identical copies."""

import copy

import pytest
import torch

import esdsnn
from esdsnn.passes import MemorySaving, run_bptt, run_spike
from esdsnn.passes.ratebp import run_spike_stage
from esdsnn.runtime.static import StaticSteps

GENERAL = MemorySaving(static_input=False)


def _count_hits(monkeypatch):
    hits = []
    real = StaticSteps.one_step

    def one_step(self, x):
        out = real(self, x)
        hits.append(out is not None)
        return out

    monkeypatch.setattr(StaticSteps, "one_step", one_step)
    return hits


@pytest.mark.parametrize("arch,shape", [("digits_resnet", (1, 8, 8)), ("vggsnn", (2, 16, 16))])
def test_spike_stage_records_equal_the_general_path(arch, shape, monkeypatch):
    model = esdsnn.create_model(arch, num_classes=10, in_channels=shape[0])
    x = torch.randn(6, *shape)
    fast, general = copy.deepcopy(model), copy.deepcopy(model)
    hits = _count_hits(monkeypatch)
    logits_a, trace_a = run_spike_stage(fast, x, 4)
    assert sum(hits) == 2  # the first conv and its BN took the shortcut, nothing else
    logits_b, trace_b = run_spike_stage(general, x, 4, memory=GENERAL)
    assert sum(hits) == 2
    torch.testing.assert_close(logits_a, logits_b, rtol=1e-5, atol=1e-6)
    for layer_a, layer_b in zip(trace_a.norms, trace_b.norms):
        a, b = trace_a.norms[layer_a], trace_b.norms[layer_b]
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.var, b.var, rtol=1e-5, atol=1e-6)
    for layer_a, layer_b in zip(trace_a.neurons, trace_b.neurons):
        a, b = trace_a.neurons[layer_a], trace_b.neurons[layer_b]
        # rates may differ only where float rounding of the BN statistics moved a membrane across θ
        assert (a.rate - b.rate).abs().gt(1e-6).float().mean() < 1e-3
    for (name, ta), tb in zip(fast.state_dict().items(), general.state_dict().values()):
        torch.testing.assert_close(ta, tb, rtol=1e-5, atol=1e-6, msg=name)  # running statistics too


def test_bptt_values_and_gradients_equal_the_general_path():
    torch.manual_seed(1)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    grads, logits, states = [], [], []
    for memory in (MemorySaving(), GENERAL):
        m = copy.deepcopy(model)
        out, _ = run_bptt(m, x, 3, memory=memory)
        out.square().sum().backward()
        logits.append(out.detach())
        grads.append({n: p.grad for n, p in m.named_parameters()})
        states.append(m.state_dict())
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-10, atol=1e-12)
    assert grads[0]["stem.0.0.weight"].abs().max() > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-11, msg=name)
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=1e-10, atol=1e-12, msg=name)


def test_inference_and_eval_mode_are_bit_identical():
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(run_spike(model, x, 4), run_spike(model, x, 4, memory=GENERAL))


def test_event_input_and_one_step_take_no_shortcut(monkeypatch):
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    hits = _count_hits(monkeypatch)
    run_spike_stage(model, torch.rand(3, 2, 1, 8, 8), 3)  # event frames differ per step
    run_bptt(model, torch.randn(2, 1, 8, 8), 1)
    assert not any(hits)


def test_a_repeat_modified_in_place_is_forgotten():
    static = StaticSteps(3)
    once = torch.randn(2, 4)
    folded = static.repeat(once)
    assert static.one_step(folded) is once and static.one_step(folded.clone()) is None
    folded.add_(1.0)
    assert static.one_step(folded) is None
    with pytest.raises(ValueError):
        static.mark(torch.zeros(5, 4), once)
