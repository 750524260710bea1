"""esdsnn's NIR files in the field's own importers, each with its default settings, against esdsnn's
float32 spike pass: SpikingJelly 2.0's ``import_from_nir`` (on a batch) and snnTorch 1.0's (one
sample at a time: its Flatten flattens the batch). Where a client itself is wrong the test is a
strict ``xfail`` naming the client's bug, with a minimal reproduction, so the day the client is
fixed the test says so. Each client is skipped when it is not installed."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import esdsnn
from esdsnn import layers as snn
from esdsnn.cli import main
from esdsnn.interop.nir import write_nir

nir = pytest.importorskip("nir")
torch.set_num_threads(1)
T = 6
SHAPE = (1, 8, 8)
HARD = dict(reset="hard", v_reset=0.0)


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = snn.conv_bn(c, c, 3)
        self.lif = snn.LIF(decay=0.3, **HARD)

    def forward(self, x):
        return self.lif(snn.add_residual(self.bn(self.conv(x)), x))


def hard_reset_net():
    """Every exported kind but IF (snnTorch cannot import it): conv + folded BN, LIFs of three
    decays, pooling, a residual sum, Flatten, a linear readout."""
    torch.manual_seed(0)
    net = nn.Sequential(
        snn.Conv2d(1, 4, 3, padding=1, bias=False),
        snn.BatchNorm2d(4),
        snn.LIF(**HARD),
        nn.AvgPool2d(2),
        Residual(4),
        snn.Conv2d(4, 8, 3, padding=1),
        snn.BatchNorm2d(8),
        snn.LIF(decay=0.5, **HARD),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(1.0, 2.0)
                m.bias.uniform_(0.0, 0.3)
    return net.eval()


@pytest.fixture
def exported(tmp_path):
    """(file, inputs, esdsnn's float32 spike-pass logits) of the hard-reset net."""
    net = hard_reset_net()
    path = tmp_path / "net.nir"
    write_nir(net, SHAPE, str(path))
    x = torch.rand(6, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2
    return path, x, esdsnn.predict(net, x, T=T)


def output_of(result):
    """A step's output: the nirtorch graph modules return ``(output, state)``."""
    return result[0] if isinstance(result, tuple) else result


def if_net(v_reset):
    """Flatten, Linear, IF, Linear: an IF layer that fires about a fifth of the time."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 12), snn.LIF(decay=1.0, reset="hard", v_reset=v_reset), nn.Linear(12, 5)
    ).eval()
    with torch.no_grad():
        net[1].weight.mul_(3)
    return net


# ---- SpikingJelly 2.0 --------------------------------------------------------------------------
def spikingjelly_logits(sj2, path, x, steps=T):
    """SpikingJelly's ``import_from_nir(file)`` with its defaults (dt = 1e-4, float32, single-step
    mode), stepped with the state it returns, on the whole batch."""
    model = sj2.import_from_nir(str(path))
    state, outputs = None, []
    for _ in range(steps):
        out, state = model(x, state)
        outputs.append(out)
    return torch.stack(outputs).mean(0)


def test_spikingjelly_2_runs_the_file_as_it_comes_on_a_batch(sj2, exported):
    path, x, ours = exported
    torch.testing.assert_close(spikingjelly_logits(sj2, path, x), ours, rtol=0, atol=1e-6)


def test_spikingjelly_2_runs_a_shifted_if_and_refuses_a_shifted_lif(sj2, tmp_path):
    """v_reset ≠ 0 is written in v = u − v_reset: an IF then needs nothing SpikingJelly lacks; a LIF
    leaks towards −v_reset while SpikingJelly's LIF can only leak towards its v_reset, so it refuses."""
    net = if_net(v_reset=0.25)
    write_nir(net, SHAPE, str(tmp_path / "if.nir"))
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(2))
    ours = esdsnn.predict(net, x, T=T)
    torch.testing.assert_close(spikingjelly_logits(sj2, tmp_path / "if.nir", x), ours, rtol=0, atol=1e-6)
    net[2] = snn.LIF(decay=0.5, reset="hard", v_reset=0.25)
    write_nir(net, SHAPE, str(tmp_path / "lif.nir"))
    with pytest.raises(ValueError, match="v_leak must equal v_reset"):
        sj2.import_from_nir(str(tmp_path / "lif.nir"))


# ---- snnTorch 1.0 ------------------------------------------------------------------------------
def snntorch_logits(graph, x, steps=T):
    """snnTorch's ``import_from_nir(graph)`` with its defaults, one sample at a time (its Flatten
    flattens the batch), the neurons' state reset between samples."""
    import_nir = pytest.importorskip("snntorch.import_nir")
    utils = pytest.importorskip("snntorch.utils")
    model = import_nir.import_from_nir(graph)
    rows = []
    for sample in x:
        utils.reset(model)
        rows.append(torch.stack([output_of(model(sample[None])) for _ in range(steps)]).mean(0).reshape(-1))
    return torch.stack(rows)


def test_snntorch_runs_the_file_as_it_comes_one_sample_at_a_time(exported):
    path, x, ours = exported
    torch.testing.assert_close(snntorch_logits(nir.read(str(path)), x), ours, rtol=0, atol=1e-6)


# ---- the clients' own bugs, each with a minimal reproduction ---------------------------------
def flatten_graph():
    """Input (2, 3, 3) -> Flatten -> Linear: NIR's shapes are one sample's, so start_dim=0 is the
    first dimension of a sample (what SpikingJelly's exporter writes too)."""
    weight = np.random.default_rng(0).normal(size=(4, 18))
    nodes = {
        "input": nir.Input(np.array([2, 3, 3])),
        "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=weight),
        "output": nir.Output(np.array([4])),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "flat"), ("flat", "fc"), ("fc", "output")])
    return graph, torch.from_numpy(weight).float()


def check_flatten(load):
    graph, weight = flatten_graph()
    x = torch.rand(3, 2, 3, 3)
    torch.testing.assert_close(output_of(load(graph)(x)), x.flatten(1) @ weight.T)


def test_spikingjelly_2_flattens_one_sample(sj2):
    check_flatten(sj2.import_from_nir)


FLATTEN_BUG = (
    "{}: nir.Flatten(start_dim=0) becomes torch.nn.Flatten(start_dim=0), which flattens the batch "
    "dimension too (NIR's shapes are one sample's: SpikingJelly maps it to start_dim + 1)"
)


@pytest.mark.xfail(strict=True, reason=FLATTEN_BUG.format("snnTorch 1.0 import_from_nir"))
def test_snntorch_flattens_one_sample():
    check_flatten(pytest.importorskip("snntorch.import_nir").import_from_nir)


@pytest.mark.xfail(strict=True, reason=FLATTEN_BUG.format("Norse 1.1 from_nir"))
def test_norse_flattens_one_sample():
    check_flatten(norse_import())


@pytest.mark.xfail(strict=True, reason=FLATTEN_BUG.format("nirtorch 2.6 nir_to_torch (default map)"))
def test_nirtorch_flattens_one_sample():
    nirtorch = pytest.importorskip("nirtorch")
    check_flatten(lambda graph: nirtorch.nir_to_torch(graph, {}))


@pytest.mark.xfail(
    strict=True,
    reason="nirtorch 2.6's default nir.Affine mapping writes the bias to "
    "module.weight.bias instead of module.bias: the Linear keeps its random bias",
)
def test_nirtorch_affine_keeps_its_bias():
    nirtorch = pytest.importorskip("nirtorch")
    weight, bias = np.eye(2, 3), np.array([5.0, -7.0])
    nodes = {
        "input": nir.Input(np.array([3])),
        "fc": nir.Affine(weight=weight, bias=bias),
        "output": nir.Output(np.array([2])),
    }
    model = nirtorch.nir_to_torch(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "output")]), {})
    x = torch.rand(1, 3)
    torch.testing.assert_close(output_of(model(x)), x[:, :2] + torch.tensor(bias, dtype=torch.float32))


@pytest.mark.xfail(
    strict=True,
    reason="snnTorch 1.0 imports nir.IF only with r == 1 (at its dt = 1e-4 an IF that "
    "adds its input each step has r = 1/dt), as a Leaky with beta = 0.9 (an IF "
    "does not leak) and init_hidden=False (its (spike, membrane) tuple reaches "
    "the next node)",
)
def test_snntorch_imports_an_if_neuron(tmp_path):
    net = if_net(v_reset=0.0)
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(2))
    logits = snntorch_logits(esdsnn.export_nir(net, SHAPE), x)
    torch.testing.assert_close(logits, esdsnn.predict(net, x, T=T), rtol=0, atol=1e-6)


def norse_import():
    norse = pytest.importorskip("norse.torch")
    return lambda graph: norse.from_nir(graph, ignore_warnings=True)


@pytest.mark.xfail(
    strict=True,
    reason="Norse 1.1 from_nir: no AvgPool2d (the node maps to nothing), nir.LIF.r "
    "ignored (it runs r = 1), dt defaults to 1e-3 where the others use 1e-4, "
    "and its Flatten flattens the batch",
)
def test_norse_runs_the_file(exported):
    path, x, ours = exported
    model = norse_import()(nir.read(str(path)))
    rows = []
    for sample in x:
        state, outputs = None, []
        for _ in range(T):
            out, state = model(sample[None], state)
            outputs.append(out)
        rows.append(torch.stack(outputs).mean(0).reshape(-1))
    torch.testing.assert_close(torch.stack(rows), ours, rtol=0, atol=1e-6)


# ---- the acceptance: a trained run's exported file in both clients ----------------------
def test_a_trained_runs_export_predicts_as_esdsnn_in_both_clients(sj2, tmp_path):
    pytest.importorskip("snntorch.import_nir")
    run, path = tmp_path / "run", tmp_path / "model.nir"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--reset",
                "hard",
                "--method",
                "ratebp",
                "--T",
                "2",
                "--batch-size",
                "32",
                "--threads",
                "1",
                "--no-progress",
                "--no-report",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["export", "--run", str(run), "--out", str(path)]) == 0
    from esdsnn.runs import load_run

    loaded = load_run(run, device="cpu")
    x, y = next(iter(loaded.test))
    x, y = x[:48], y[:48]
    ours = esdsnn.predict(loaded.model.eval(), x, T=loaded.steps)
    assert float((ours.argmax(1) == y).float().mean()) > 0.5, "the run must have learned something"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {
            "SpikingJelly 2.0": spikingjelly_logits(sj2, path, x, loaded.steps),
            "snnTorch 1.0": snntorch_logits(nir.read(str(path)), x, loaded.steps),
        }
    for client, logits in theirs.items():
        assert torch.equal(logits.argmax(1), ours.argmax(1)), client
        torch.testing.assert_close(logits, ours, rtol=0, atol=1e-5, msg=client)
