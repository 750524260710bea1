"""A researcher's own model: any nn.Module of esdsnn layers trains with every method, ESD branches
on named stages, and the traps (plain BatchNorm or Dropout under RateBP, no neuron, an output
that is not folded) give a conversion notice or a clear error."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import esdsnn
from esdsnn import layers as snn
from esdsnn.errors import ConfigError
from esdsnn.passes import run_bptt, run_rate_stage, run_spike_stage

torch.set_num_threads(1)
SHAPE = (1, 16, 16)


def plain_net(norm=snn.BatchNorm2d, **lif):
    """The SPEC §10.1 example: a Sequential of esdsnn and stateless torch layers, no subclass."""
    return nn.Sequential(
        snn.Conv2d(1, 8, 3, padding=1, bias=False),
        norm(8),
        snn.LIF(**lif),
        nn.AvgPool2d(2),
        snn.Conv2d(8, 16, 3, padding=1, bias=False),
        norm(16),
        snn.LIF(**lif),
        nn.AvgPool2d(2),
        snn.Conv2d(16, 32, 3, padding=1, bias=False),
        norm(32),
        snn.LIF(**lif),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def batch(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=gen) * 2, torch.randint(0, 10, (n,), generator=gen)


def test_predict_gives_one_row_per_sample():
    x, _ = batch(8)
    logits = esdsnn.predict(plain_net(), x, T=4)
    assert logits.shape == (8, 10)
    events = torch.rand(4, 8, *SHAPE)
    assert esdsnn.predict(plain_net(), events, T=4).shape == (8, 10)


@pytest.mark.parametrize("method", ["bptt", "ratebp", "esd", "esd-bptt", "sd", "ann"])
def test_every_method_trains_a_plain_module(method):
    net = plain_net()
    options = {"stages": ["2", "6"]} if method in ("esd", "esd-bptt", "sd") else {}
    trainer = esdsnn.create_method(method, net, T=3, input_shape=SHAPE, **options)
    opt = torch.optim.SGD(trainer.parameters(), lr=0.05)
    x, y = batch()
    for _ in range(2):
        opt.zero_grad()
        out = trainer(x, y)
        out.loss.backward()
        for name, p in trainer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        opt.step()
    assert out.logits.shape == (6, 10) and torch.isfinite(out.loss)


def test_kd_trains_a_plain_student_from_its_relu_twin():
    teacher = esdsnn.methods.method_spec("ann").prepared(plain_net()).eval()
    trainer = esdsnn.create_method("kd", plain_net(), T=3, teacher=teacher, input_shape=SHAPE)
    assert trainer.student_tap == "10" and trainer.teacher_tap == "10"  # the last feature map
    x, y = batch()
    out = trainer(x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.parts["samd"] >= 0


def test_branches_on_named_stages_follow_the_probed_shapes():
    method = esdsnn.create_method("esd", plain_net(), T=2, stages=["2", "6"], input_shape=SHAPE)
    assert method.branch_taps == ["2", "6"]
    # stage "2": 8 channels at 16x16 -> the last feature map, 32 channels at 4x4: two halvings
    plans = [
        [(blk.op[0].in_channels, blk.op[5].out_channels) for blk in b if hasattr(blk, "op")] for b in method.branches
    ]
    assert plans == [[(8, 16), (16, 32)], [(16, 32)]]
    heads = [b(torch.rand(2, *s)) for b, s in zip(method.branches, [(8, 16, 16), (16, 8, 8)])]
    assert all(h.shape == (2, 10) for h in heads)


@pytest.mark.parametrize(
    "stages, message",
    [
        (["nope"], "no submodule 'nope'.*: 2, 6$"),
        (["1"], "does not output spikes.*: 2, 6$"),
        (["12"], "comes after the last spatial layer.*: 2, 6$"),
        (["10"], "stage '10' is the model's last feature map.*: 2, 6$"),
    ],
)
def test_stages_that_cannot_feed_a_branch_are_named(stages, message):
    with pytest.raises(ConfigError, match=message):
        esdsnn.create_method("esd", plain_net(), T=2, stages=stages, input_shape=SHAPE)


def test_esd_on_a_plain_module_without_stages_lists_only_stages_the_next_check_accepts():
    with pytest.raises(ConfigError, match="name them .*: 2, 6$") as refused:
        esdsnn.create_method("esd", plain_net(), T=2, input_shape=SHAPE)
    offered = str(refused.value).rsplit(": ", 1)[1].split(", ")
    for stage in offered:  # every stage offered is one the next run takes
        esdsnn.create_method("esd", plain_net(), T=2, stages=[stage], input_shape=SHAPE)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_ratebp_equals_bptt_at_T1_on_a_plain_module():
    torch.manual_seed(1)
    a = plain_net().double()
    b = copy.deepcopy(a)
    x, y = batch()
    x = x.double()
    logits_a, _ = run_bptt(a, x, 1)
    F.cross_entropy(logits_a, y).backward()
    _, trace = run_spike_stage(b, x, 1)
    logits_b, _ = run_rate_stage(b, x, trace)
    F.cross_entropy(logits_b, y).backward()
    torch.testing.assert_close(logits_b, logits_a, rtol=1e-12, atol=1e-12)
    ga, gb = grads(a), grads(b)
    for name in ga:
        scale = max(1.0, ga[name].abs().max().item())
        assert (ga[name] - gb[name]).abs().max().item() <= 1e-10 * scale, name


def test_plain_batchnorm_is_converted_for_ratebp_and_trains_like_the_rate_aware_one(capsys):
    torch.manual_seed(2)
    plain = plain_net(norm=nn.BatchNorm2d)
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.weight.uniform_(0.5, 1.5)
    aware = plain_net()
    aware.load_state_dict(plain.state_dict())  # same keys: the rate-aware layer is a drop-in
    x, y = batch()
    a = esdsnn.create_method("ratebp", plain, T=3)
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 3 and all("BatchNorm2d -> RateBatchNorm2d" in line for line in notices)
    assert not any(type(m) is nn.BatchNorm2d for m in plain.modules())
    assert torch.equal(plain[1].running_mean, aware[1].running_mean)  # state carried over
    b = esdsnn.create_method("ratebp", aware, T=3)
    a(x, y).loss.backward()
    b(x, y).loss.backward()
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_plain_dropout_is_converted_and_uses_one_mask_in_both_stages(capsys, monkeypatch):
    net = nn.Sequential(
        snn.Conv2d(1, 6, 1), snn.LIF(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)
    )
    trainer = esdsnn.create_method("ratebp", net, T=4)
    assert "2: Dropout -> Dropout" in capsys.readouterr().err
    dropout = net[2]
    assert isinstance(dropout, snn.Dropout)
    masks, seen = [], []
    draw = snn.Dropout._draw
    monkeypatch.setattr(snn.Dropout, "_draw", lambda self, x, b: masks.append(draw(self, x, b)) or masks[-1])
    dropout.register_forward_hook(lambda m, i, out: seen.append((snn.unpack_spikes(i[0]).detach(), out.detach())))
    x = torch.rand(5, 1, 4, 4) * 3
    trainer(x, torch.zeros(5, dtype=torch.long)).loss.backward()
    (mask,) = masks  # drawn once, in the spike stage
    assert 0 < float((mask == 0).float().mean()) < 1 and set(mask.unique().tolist()) <= {0.0, 2.0}
    (spike_in, spike_out), (rate_in, rate_out) = seen
    torch.testing.assert_close(spike_out, (spike_in.view(4, 5, 6, 4, 4) * mask).flatten(0, 1))  # every step
    torch.testing.assert_close(rate_out, rate_in * mask)  # the rate stage: the same mask


def test_a_model_without_a_neuron_is_refused_by_spiking_methods():
    ann = nn.Sequential(snn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    for method, options in (("bptt", {}), ("ratebp", {}), ("esd", {"stages": ["1"]})):
        with pytest.raises(ConfigError, match="has no esdsnn.layers.LIF neuron"):
            esdsnn.create_method(method, copy.deepcopy(ann), T=2, **options)
    esdsnn.create_method("ann", copy.deepcopy(ann), T=2)  # the ANN method takes it


def test_predict_says_when_the_output_is_not_folded():
    class TimeMeanItself(nn.Module):  # averages over time on its own: esdsnn would average again
        def __init__(self):
            super().__init__()
            self.body = plain_net()

        def forward(self, x):
            return self.body(x).view(4, -1, 10).mean(0)

    with pytest.raises(
        ConfigError,
        match=r"returns shape \(3, 10\): it averages over the time steps itself.*"
        r"\[T·B, K\] = \[12, K\] for 3 sample\(s\) at T=4",
    ):
        esdsnn.predict(TimeMeanItself(), torch.rand(3, *SHAPE), T=4)


class WithFeatures(nn.Module):  # returns (logits, features), as some codebases do
    def __init__(self):
        super().__init__()
        self.body = plain_net()

    def forward(self, x):
        return self.body(x), x


def feature_map_net():  # no classifier: its output is the last feature map
    return nn.Sequential(*list(plain_net())[:11])


@pytest.mark.parametrize(
    "make, message",
    [
        (WithFeatures, r"returns a tuple of 2 values; it must return one tensor, its logits \[T·B, K\]"),
        (
            feature_map_net,
            r"returns a feature map, \[32, 4, 4\] per step and sample, not logits .*nn.Linear\(32, num_cl",
        ),
    ],
)
def test_predict_refuses_what_is_not_logits(make, message):
    """Never a 4-D tensor returned silently, never an AttributeError: one line naming the fix."""
    with pytest.raises(ConfigError, match=message):
        esdsnn.predict(make(), torch.rand(3, *SHAPE), T=2)


@pytest.mark.parametrize("make", [WithFeatures, feature_map_net])
def test_the_output_contract_is_checked_before_training(make):
    from esdsnn.models.anatomy import check_output_contract

    check_output_contract(plain_net(), SHAPE)  # logits [T·B, K]: passes
    with pytest.raises(ConfigError, match="the model returns a"):
        check_output_contract(make(), SHAPE)
