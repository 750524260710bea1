"""The no-grad LIF loops (inference, RateBP's spike stage) take a large layer on CPU in blocks of
neurons that stay in the cache over the T steps; they read bfloat16 input through a float32
buffer and fire into a membrane-typed buffer before storing the spikes in the output's type.

Each of these must compute exactly what one pass over the layer computes: every op of the step is
elementwise, so blocks (whose boundaries fall on whole vectors) and buffers change nothing, bit
for bit. The references: the same loop in one block, the autograd loop of the step, and float32
input holding the same values as the bfloat16 input.
"""

import pytest
import torch

import esdsnn.neurons.lif as lif
from esdsnn.neurons import LIFConfig, lif_multistep, lif_rate_eligibility, lif_spikes

DECAY = 0.3
T, SHAPE = 5, (3, 7, 11, 13)  # 3003 neurons: 47 blocks of 64, the last one of 59
CONFIGS = [
    LIFConfig(),
    LIFConfig(detach_reset=False, threshold=0.8),
    LIFConfig(reset="hard", v_reset=-0.2),
    LIFConfig(reset="hard", detach_reset=False),
    LIFConfig(surrogate="atan", surrogate_alpha=2.0),
]


def _input(dtype=torch.float32):
    return (torch.randn(T, *SHAPE) * 1.3 + 0.4).to(dtype)


def _run(x, p, out_dtype):
    """(spikes, rate, eligibility) of the spike stage and the inference spikes, into fresh
    buffers of ``out_dtype`` (None: the input's type)."""

    def buffer():
        return None if out_dtype is None else torch.empty_like(x, dtype=out_dtype)

    return (*lif_rate_eligibility(x.clone(), DECAY, p, out=buffer()), lif_spikes(x.clone(), DECAY, p, out=buffer()))


@pytest.mark.parametrize("p", CONFIGS, ids=["soft", "soft-attached", "hard-vreset", "hard-attached", "atan"])
@pytest.mark.parametrize(
    "in_dtype,out_dtype",
    [(torch.float32, None), (torch.float32, torch.uint8), (torch.bfloat16, None), (torch.bfloat16, torch.uint8)],
)
def test_blocks_compute_what_one_pass_computes(monkeypatch, p, in_dtype, out_dtype):
    x = _input(in_dtype)
    whole = _run(x, p, out_dtype)
    calls = []
    block_loop = lif._run_steps
    monkeypatch.setattr(lif, "_run_steps", lambda *a, **k: calls.append(a[0].shape) or block_loop(*a, **k))
    monkeypatch.setattr(lif, "CPU_BLOCK", 64)
    blocks = _run(x, p, out_dtype)
    assert len(calls) == 2 * 47 and calls[0] == (T, 64) and calls[46] == (T, 59)  # the loops really ran in blocks
    for a, b in zip(whole, blocks):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    # and they are the neuron's spikes: those of the autograd loop of the step
    assert torch.equal(blocks[0].float(), lif_multistep(x.float(), DECAY, p).float())


@pytest.mark.parametrize("p", CONFIGS[:3], ids=["soft", "soft-attached", "hard-vreset"])
def test_bfloat16_input_is_read_exactly(monkeypatch, p):
    """bf16 input gives what float32 input holding the same values gives (widening is exact; the
    membranes are float32 either way), spikes stored in bf16 as well as in bytes."""
    monkeypatch.setattr(lif, "CPU_BLOCK", 64)
    x16 = _input(torch.bfloat16)
    x32 = x16.float()
    for out_dtype in (None, torch.uint8):
        got, want = _run(x16, p, out_dtype), _run(x32, p, out_dtype)
        assert got[0].dtype == (torch.bfloat16 if out_dtype is None else torch.uint8)
        assert got[1].dtype == got[2].dtype == torch.float32
        for a, b in zip(got, want):
            assert torch.equal(a.float(), b.float())


def test_neurons_that_are_not_flat_in_memory_run_as_one_block(monkeypatch):
    x = _input().transpose(2, 3)  # a strided view: its neurons cannot be flattened without a copy
    assert not x.is_contiguous()
    want = lif_rate_eligibility(x, DECAY, LIFConfig(), out=torch.empty_like(x))
    calls = []
    block_loop = lif._run_steps
    monkeypatch.setattr(lif, "_run_steps", lambda *a, **k: calls.append(a[0].shape) or block_loop(*a, **k))
    monkeypatch.setattr(lif, "CPU_BLOCK", 64)
    got = lif_rate_eligibility(x, DECAY, LIFConfig(), out=torch.empty_like(x))
    assert calls == [x.shape]
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_spikes_written_over_their_input(monkeypatch):
    """``out=x_seq`` (inference writing spikes over a fresh input) stays correct in blocks: each
    step's input is read before its spikes are written."""
    monkeypatch.setattr(lif, "CPU_BLOCK", 64)
    x = _input()
    want = lif_spikes(x.clone(), DECAY, LIFConfig())
    own = x.clone()
    assert torch.equal(lif_spikes(own, DECAY, LIFConfig(), out=own), want)
