"""The GPU path: compiled neuron loops (chosen automatically on CUDA, eager fallback) give the
eager loops' results; checked here on the CPU build of the same code."""

import pytest
import torch

from esdsnn.neurons import LIF, LIFConfig
from esdsnn.neurons import lif as lif_module
from esdsnn.neurons.lif import EAGER_KERNELS, _with_fallback, compiled_kernels, kernels_for, lif_multistep
from esdsnn.passes import PassState, use_pass


@pytest.mark.slow
def test_compiled_fused_bptt_equals_eager_values_and_gradients(recwarn):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    p = LIFConfig(reset="hard", detach_reset=False, threshold=0.9)
    x = torch.randn(5, 3, 4, 6) * 1.5 + 0.4
    g = torch.randn_like(x)
    logit = torch.tensor(0.2)
    results = []
    for fn in (compiled_kernels().multistep, EAGER_KERNELS.multistep, lif_multistep):
        xs = x.clone().requires_grad_()
        lg = logit.clone().requires_grad_()
        s = fn(xs, torch.sigmoid(lg), p)
        results.append((s, *torch.autograd.grad((s * g).sum(), [xs, lg])))
    compiled, eager, loop = results
    assert counters["frames"]["ok"] >= 2  # the node's forward and backward loops were compiled
    assert not [w for w in recwarn if "running it eagerly" in str(w.message)]  # no silent fallback
    assert 0 < eager[0].mean() < 1
    assert torch.equal(compiled[0], eager[0]) and torch.equal(eager[0], loop[0])
    for a, b, c in zip(compiled[1:], eager[1:], loop[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-6)


def test_cuda_gets_the_compiled_loops_automatically(monkeypatch):
    assert kernels_for(torch.device("cpu"), EAGER_KERNELS) is EAGER_KERNELS
    assert kernels_for(torch.device("cuda"), EAGER_KERNELS) is compiled_kernels()
    mine = compiled_kernels()._replace(spikes=lambda *a, **k: None)
    assert kernels_for(torch.device("cuda"), mine) is mine  # an explicit choice is kept
    monkeypatch.setenv("ESDSNN_EAGER_NEURONS", "1")
    assert kernels_for(torch.device("cuda"), EAGER_KERNELS) is EAGER_KERNELS


def test_a_failing_compiler_falls_back_to_eager_with_one_warning():
    def broken(*args, **kwargs):
        raise RuntimeError("no backend for this device")

    calls = []

    def eager(x):
        calls.append(x)
        return x + 1

    fn = _with_fallback(broken, eager)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        assert fn(1) == 2
    assert fn(2) == 3 and calls == [1, 2]  # no second attempt, no second warning


@pytest.mark.cuda
def test_lif_on_cuda_runs_compiled_loops_equal_to_cpu():
    layer = LIF(decay=0.3)
    x = torch.randn(4 * 8, 16) * 1.5 + 0.4
    with use_pass(PassState("bptt", 4)):
        cpu = layer(x)
        gpu = layer.cuda()(x.cuda())
    assert torch.equal(gpu.cpu(), cpu)
    assert lif_module.kernels_for(x.cuda().device, layer.kernels) is compiled_kernels()


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_each_compiled_loop_is_one_graph(reset):
    """torch.compile traces each loop whole (no graph break, which would run the rest of the loop
    eagerly), with a fresh configuration whose surrogate nothing has used yet."""
    from esdsnn.neurons.fused import bptt_backward, bptt_forward
    from esdsnn.neurons.lif import lif_rate_eligibility, lif_spikes

    x = torch.randn(3, 2, 5)
    for fn, args in [
        (bptt_forward, lambda p: (x, 0.3, p)),
        (bptt_backward, lambda p: (torch.randn_like(x), x, torch.tensor(0.3), p, True)),
        (lif_rate_eligibility, lambda p: (x.clone(), 0.3, p, torch.empty_like(x, dtype=torch.uint8))),
        (lif_spikes, lambda p: (x.clone(), 0.3, p)),
    ]:
        p = LIFConfig(reset=reset, detach_reset=False, v_reset=-0.2 if reset == "hard" else 0.0)
        explained = torch._dynamo.explain(fn)(*args(p))
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (fn.__name__, explained.break_reasons)
