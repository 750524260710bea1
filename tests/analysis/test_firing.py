"""Firing rates, MACs/SOPs and the energy estimate against a hand computation."""

import json

import pytest
import torch
from torch import nn

import esdsnn
from esdsnn.analysis.firing import FiringReport, firing_flag, measure_firing
from esdsnn.models.base import SpikingNet
from esdsnn.neurons.lif import LIF


class TinyNet(SpikingNet):
    """conv1x1(2→2, identity) → LIF → conv1x1(2→3) → LIF → linear(3→2); LIF threshold 1, decay 0.2.

    Input currents (1.0, 0.9) at every step. By hand (h_t = 0.2·u_{t-1} + x, soft reset):
    - x = 1.0: h = 1 at every step → spikes 1 1 1 1.
    - x = 0.9: h = 0.9 (no), 1.08 (fire, u = 0.08), 0.916 (no), 1.0832 (fire) → 0 1 0 1.
    Stage conv rows: (1, 0) copies 1111 → fires 1111; (0, 1) copies 0101 → h = 0, 1, 0, 1 → 0101;
    (0.5, 0) → h = 0.5, 0.6, 0.62, 0.624 → never fires.
    """

    def __init__(self) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.stage_channels = 2, 2, (3,)
        conv0 = nn.Conv2d(2, 2, 1, bias=False)
        conv1 = nn.Conv2d(2, 3, 1, bias=False)
        with torch.no_grad():
            conv0.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            conv1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.0]]).view(3, 2, 1, 1))
        self.stem = nn.Sequential(conv0, LIF(decay=0.2))
        self.stages = nn.ModuleList([nn.Sequential(conv1, LIF(decay=0.2))])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))


def _source(batches=2, batch=3):
    x = torch.tensor([1.0, 0.9]).view(1, 2, 1, 1).expand(batch, 2, 1, 1).contiguous()
    return [(x, torch.zeros(batch, dtype=torch.long)) for _ in range(batches)]


def test_rates_sops_energy_match_hand_computation():
    T = 4
    r = measure_firing(TinyNet(), _source(), T)
    assert r.samples == 6
    stem, stage = r.layers
    assert (stem.name, stem.neurons, stage.name, stage.neurons) == ("stem.1", 2, "stages.0.1", 3)
    assert stem.step_rates == pytest.approx([0.5, 1.0, 0.5, 1.0])
    assert stem.rate == pytest.approx(0.75)
    assert stage.step_rates == pytest.approx([1 / 3, 2 / 3, 1 / 3, 2 / 3])
    assert stage.rate == pytest.approx(0.5)
    assert r.avg_rate == pytest.approx((2 * 0.75 + 3 * 0.5) / 5)  # 0.6, weighted by neurons
    assert r.step_avg_rates == pytest.approx([2 / 5, 4 / 5, 2 / 5, 4 / 5])

    first, conv, fc = r.ops
    # first conv: 2 outputs x 2 inputs = 4 MACs, real input repeated at every step: charged once
    assert (first.name, first.counted_as, first.macs_per_step, first.macs, first.sops) == ("stem.0", "mac", 4, 4, 0)
    assert first.input_repeated and not first.binary_input
    # stage conv: 3x2 = 6 MACs/step; 6 input spikes per sample over 4 steps (rate 0.75) fan out to 3
    assert conv.counted_as == "sop" and conv.macs_per_step == 6
    assert conv.input_rate == pytest.approx(0.75) and conv.sops == pytest.approx(0.75 * 4 * 6)  # 18
    # head: 3x2 = 6 MACs/step; 6 input spikes over 4 steps (rate 0.5) fan out to 2
    assert fc.counted_as == "sop" and fc.input_rate == pytest.approx(0.5) and fc.sops == pytest.approx(12)
    assert r.total_macs == 4 and r.total_sops == pytest.approx(30)
    assert r.dense_macs_per_step == 16
    assert r.energy_mj_per_sample == pytest.approx((4.6 * 4 + 0.9 * 30) * 1e-9)
    assert r.accuracy is not None and 0.0 <= r.accuracy <= 1.0


def test_table_dict_round_trip_and_mode_restored():
    model = TinyNet().train()
    r = measure_firing(model, _source(1, 2), 4)
    assert model.training  # mode restored
    assert not model.stem[1]._forward_hooks  # hooks removed
    table = r.markdown().splitlines()
    assert table[0] == "| layer | neurons | t=1 | t=2 | t=3 | t=4 | mean |"
    assert table[2].startswith("| `stem.1` | 2 | 0.5000 | 1.0000 | 0.5000 | 1.0000 | 0.7500")
    assert "0.6000" in table[-1]
    assert "SOP" in r.ops_markdown() and "estimate" in " ".join(r.summary_lines())
    d = json.loads(json.dumps(r.to_dict()))
    assert {"layers", "ops", "avg_rate", "total_macs", "total_sops", "energy_mj_per_sample"} <= set(d)
    assert FiringReport.from_dict(d) == r


def test_event_input_charges_first_layer_every_step():
    T = 4
    x = torch.tensor([1.0, 0.9]).view(1, 1, 2, 1, 1).expand(T, 2, 2, 1, 1).clone()
    x[1] *= 0.5  # frames differ: the first layer runs at every step
    r = measure_firing(TinyNet(), [(x, torch.zeros(2, dtype=torch.long))], T)
    assert r.samples == 2
    assert not r.ops[0].input_repeated and r.ops[0].macs == 4 * T


def test_layer_after_average_pooling_counts_macs():
    """Pixel a gets (1.0, 0.9), pixel b (0, 0): the stage spikes 1111/0101/0000 at a, nothing at b;
    the pooled head input is (0.5, 0 or 0.5, 0): real-valued, so the head is charged 6 MACs × T."""
    T = 4
    model = TinyNet()
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    x = torch.zeros(2, 2, 1, 2)
    x[:, :, 0, 0] = torch.tensor([1.0, 0.9])
    r = measure_firing(model, [(x, torch.zeros(2, dtype=torch.long))], T)
    first, conv, head = r.ops
    assert first.macs == 2 * 2 * 2  # two pixels, 2 outputs x 2 inputs, once (static input)
    assert conv.counted_as == "sop" and conv.sops == pytest.approx(6 * 3)  # 6 spikes fan out to 3
    assert head.counted_as == "mac" and not head.binary_input and not head.input_repeated
    assert head.macs == 6 * T and head.sops == 0
    assert r.layers[1].step_rates == pytest.approx([1 / 6, 2 / 6, 1 / 6, 2 / 6])  # 6 neurons per sample
    assert r.energy_mj_per_sample == pytest.approx((4.6 * (8 + 24) + 0.9 * 18) * 1e-9)


def test_registered_model_consistency():
    torch.manual_seed(0)
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    x = torch.randn(4, 1, 8, 8) * 3
    T = 3
    r = measure_firing(model, [(x, torch.arange(4))], T)
    lifs = [n for n, m in model.named_modules() if isinstance(m, LIF)]
    assert sorted(layer.name for layer in r.layers) == sorted(lifs)
    assert r.layers[0].name == "stem.1" and r.layers[0].neurons == 32 * 8 * 8
    for layer in r.layers:
        assert 0.0 <= layer.rate <= 1.0 and len(layer.step_rates) == T
    total = sum(layer.neurons for layer in r.layers)
    assert r.avg_rate == pytest.approx(sum(layer.rate * layer.neurons for layer in r.layers) / total)
    ops = {op.name: op for op in r.ops}
    assert ops["stem.0.0"].counted_as == "mac" and ops["stem.0.0"].macs == 32 * 8 * 8 * 1 * 9
    assert ops["head.2"].counted_as == ("sop" if ops["head.2"].binary_input else "mac")
    assert ops["stages.0.0.conv1.0"].counted_as == "sop"
    # SOPs equal the input rate x T x MACs of a step
    for op in r.ops:
        if op.counted_as == "sop":
            assert op.sops == pytest.approx(op.input_rate * T * op.macs_per_step)
    # the spike pass prediction agrees with esdsnn.predict
    assert r.accuracy == pytest.approx(
        float((esdsnn.predict(model, x, T).argmax(-1) == torch.arange(4)).float().mean())
    )


def _flagged_net() -> TinyNet:
    """TinyNet with the stem's threshold 0.01 and the stage's 100. By hand: the stem gets 1.0 and
    0.9 at every step, above 0.01, so both neurons fire at all 4 steps (rate 1: saturated); the
    stage then gets at most 1 + 0.2·u per step, never near 100 (rate 0: dead)."""
    net = TinyNet()
    net.stem[1] = LIF(decay=0.2, threshold=0.01)
    net.stages[0][1] = LIF(decay=0.2, threshold=100.0)
    return net


def test_dead_and_saturated_layers_are_flagged():
    r = measure_firing(_flagged_net(), _source(), 4)
    stem, stage = r.layers
    assert stem.step_rates == pytest.approx([1.0] * 4) and stem.flag == "saturated"
    assert stage.rate == 0.0 and stage.flag == "dead"
    assert (r.dead_layers, r.saturated_layers) == (["stages.0.1"], ["stem.1"])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["dead_layers"] == ["stages.0.1"] and d["saturated_layers"] == ["stem.1"]
    assert [layer["flag"] for layer in d["layers"]] == ["saturated", "dead"]
    assert FiringReport.from_dict(d) == r
    dead, saturated = sorted(r.flag_lines())
    assert dead.startswith("- **dead layer** `stages.0.1`: no spike at all") and "lower its threshold" in dead
    assert "input normalisation" in dead and "learning rate" in dead
    assert (
        saturated.startswith("- **saturated layer** `stem.1`: mean rate 1.0000") and "raise its threshold" in saturated
    )


def test_normal_layers_are_not_flagged_and_the_limits():
    r = measure_firing(TinyNet(), _source(), 4)  # rates 0.75 and 0.5 by hand (above)
    assert [layer.flag for layer in r.layers] == [None, None] and r.flag_lines() == []
    assert r.to_dict()["dead_layers"] == [] and r.to_dict()["saturated_layers"] == []
    assert [firing_flag(x) for x in (0.0, 0.00099, 0.001, 0.5, 0.9499, 0.95, 1.0)] == [
        "dead",
        "dead",
        None,
        None,
        None,
        "saturated",
        "saturated",
    ]
    old = r.to_dict()  # a firing_rates.json written before flags existed still reads
    del old["dead_layers"], old["saturated_layers"]
    for layer in old["layers"]:
        del layer["flag"]
    assert FiringReport.from_dict(old) == r
