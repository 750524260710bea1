"""Where RateBP is exact at T > 1, and what its rate stage is fed (SPEC §3).

- One LIF layer on a static input with a time-mean linear readout: the eligibility is exactly the
  surrogate derivative of the rate w.r.t. the (constant) input and dL/dr is the same in both
  passes, so RateBP's gradients equal BPTT's for every reset rule of the SPEC §3 table.
- Event input: the rate stage runs on the mean frame, so the first conv's weight gradient is
  torch's conv2d weight gradient of the mean frame against the upstream gradient.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esdsnn.layers import Conv2d, RateBatchNorm2d
from esdsnn.models.base import SpikingNet
from esdsnn.neurons import LIF
from esdsnn.passes import run_bptt, run_rate_stage, run_spike_stage

torch.set_num_threads(1)


class OneLIF(SpikingNet):
    """flatten → linear → LIF → linear; the readout is the time mean of the head."""

    def __init__(self, lif: LIF, in_shape=(1, 3, 4), hidden=10, num_classes=3):
        super().__init__()
        self.in_channels = in_shape[0]
        self.num_classes = num_classes
        self.stage_channels = (hidden,)
        n_in = in_shape[0] * in_shape[1] * in_shape[2]
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden))
        self.stages = nn.ModuleList([lif])
        self.head = nn.Linear(hidden, num_classes)
        with torch.no_grad():  # currents around the threshold: some neurons fire, some never do
            self.stem[1].weight.normal_(0.0, 0.25)
            self.stem[1].bias.uniform_(0.5, 0.9)


def grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def assert_grads_equal_by_name(got, want, rtol):
    assert got.keys() == want.keys() and len(want) > 0
    for name, g in want.items():
        scale = max(1.0, g.abs().max().item())
        err = (got[name] - g).abs().max().item()
        assert err <= rtol * scale, f"{name}: max|Δ| = {err:.3g} > {rtol:g}·{scale:.3g}"


# every row of the SPEC §3 eligibility table; hard reset also with a nonzero v_reset.
# ("hard", False) is the row RateBP's reference code gets wrong; this is where it is checked at T > 1.
RESET_ROWS = [
    ("soft", True, 0.0),
    ("soft", False, 0.0),
    ("hard", True, 0.0),
    ("hard", False, 0.0),
    ("hard", True, -0.3),
    ("hard", False, -0.3),
]


@pytest.mark.parametrize("T", [2, 5])
@pytest.mark.parametrize("reset,detach_reset,v_reset", RESET_ROWS)
def test_ratebp_equals_bptt_exactly_for_one_lif_layer_on_static_input(T, reset, detach_reset, v_reset):
    lif = LIF(decay=0.35, reset=reset, detach_reset=detach_reset, v_reset=v_reset)
    bptt_model = OneLIF(lif).double().train()
    rate_model = copy.deepcopy(bptt_model)
    x = torch.randn(8, 1, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))

    logits_b, _ = run_bptt(bptt_model, x, T)
    loss_b = F.cross_entropy(logits_b, y)
    loss_b.backward()

    spike_logits, trace = run_spike_stage(rate_model, x, T)
    logits_r, _ = run_rate_stage(rate_model, x, trace)
    loss_r = F.cross_entropy(logits_r, y)
    loss_r.backward()

    # the inputs exercise the neuron: many rates strictly between 0 and 1, some 0 (silent), some 1
    rate = trace.neuron(rate_model.stages[0]).rate
    assert ((rate > 0) & (rate < 1)).double().mean() >= 0.1 and (rate == 0).any() and (rate == 1).any(), rate
    torch.testing.assert_close(loss_r, loss_b, rtol=1e-12, atol=0)
    torch.testing.assert_close(spike_logits, logits_b.detach(), rtol=1e-12, atol=1e-12)
    want = grads(bptt_model)
    assert want["stem.1.weight"].abs().max() > 1e-3  # the gradient through the neuron is not trivial
    assert_grads_equal_by_name(grads(rate_model), want, rtol=1e-10)


class EventNet(SpikingNet):
    """conv (stride 2) → BN → LIF, one conv stage, pooled linear head."""

    def __init__(self, in_channels=2, width=4, num_classes=3):
        super().__init__()
        self.in_channels, self.num_classes, self.stage_channels = in_channels, num_classes, (width,)
        self.stem = nn.Sequential(
            Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), RateBatchNorm2d(width), LIF()
        )
        self.stages = nn.ModuleList(
            [nn.Sequential(Conv2d(width, width, 3, padding=1, bias=False), RateBatchNorm2d(width), LIF())]
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def test_event_input_rate_stage_uses_the_mean_frame():
    T = 3
    model = EventNet().double().train()
    # three clearly different frames: their mean is neither the last frame nor their sum
    frames = torch.rand(T, 4, 2, 8, 8, dtype=torch.float64) * torch.tensor([0.5, 3.0, 1.0], dtype=torch.float64).view(
        T, 1, 1, 1, 1
    )
    y = torch.randint(0, 3, (4,))
    _, trace = run_spike_stage(model, frames, T)

    conv = model.stem[0]
    captured = {}

    def keep_output_grad(module, inputs, out):
        out.retain_grad()
        captured["out"] = out

    handle = conv.register_forward_hook(keep_output_grad)
    logits, _ = run_rate_stage(model, frames, trace)
    handle.remove()
    F.cross_entropy(logits, y).backward()
    delta = captured["out"].grad
    assert delta is not None and delta.abs().max() > 0

    def weight_grad(inp):
        return torch.nn.grad.conv2d_weight(inp, conv.weight.shape, delta, stride=conv.stride, padding=conv.padding)

    want = weight_grad(frames.mean(0))
    torch.testing.assert_close(conv.weight.grad, want, rtol=1e-10, atol=1e-12)
    scale = want.abs().max()
    for wrong in (frames[-1], frames.sum(0)):
        assert (conv.weight.grad - weight_grad(wrong)).abs().max() > 0.1 * scale
