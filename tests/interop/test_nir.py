"""NIR export: the graph read back from its file holds the model's layers with BatchNorm folded, and
a simulator written from NIR's own definitions (forward Euler at the graph's dt, 1e-4 s) spikes like
esdsnn, also for v_reset ≠ 0 and SEW ADD connections. (The clients' importers:
test_nir_clients.py.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import esdsnn
from esdsnn import layers as snn
from esdsnn.cli import main
from esdsnn.errors import ConfigError

nir = pytest.importorskip("nir")
torch.set_num_threads(1)
HARD = dict(reset="hard", v_reset=0.0)
SHAPE = (1, 8, 8)


class Residual(nn.Module):
    def __init__(self, c, hard=HARD):
        super().__init__()
        self.conv, self.bn = snn.conv_bn(c, c, 3)
        self.lif = snn.LIF(decay=0.3, **hard)

    def forward(self, x):
        return self.lif(snn.add_residual(self.bn(self.conv(x)), x))


def hard_reset_net(v_reset=0.0):
    torch.manual_seed(0)
    hard = dict(reset="hard", v_reset=v_reset)
    net = nn.Sequential(
        snn.Conv2d(1, 4, 3, padding=1, bias=False),
        snn.BatchNorm2d(4),
        snn.LIF(**hard),
        nn.AvgPool2d(2),
        Residual(4, hard),
        snn.Conv2d(4, 8, 3, padding=1),
        snn.BatchNorm2d(8),
        snn.LIF(decay=0.5, **hard),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8, 10),
        snn.LIF(decay=1.0, **hard),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(1.0, 2.0)
                m.bias.uniform_(0.0, 0.3)
        net[11].weight.mul_(4)
    return net.eval()


def ints(v):
    return tuple(int(a) for a in np.broadcast_to(np.asarray(v), (2,)))


def simulate(graph, x, T):
    """The NIR graph run step by step from NIR's definitions, forward Euler at the ``dt`` of its
    metadata: every node sums its inputs; LIF ``τ·dv/dt = v_leak − v + r·I``, IF ``dv/dt = r·I``,
    membranes start at 0, spike where ``v > v_threshold``, then ``v = v_reset``."""
    dt = float(graph.metadata["dt"])
    order, done = [], {"input"}
    while len(order) < len(graph.nodes) - 1:
        for name in graph.nodes:
            srcs = [s for s, d in graph.edges if d == name]
            if name not in done and srcs and all(s in done for s in srcs):
                order.append(name)
                done.add(name)
    state, outputs = {}, []
    for _ in range(T):
        values = {"input": x}
        for name in order:
            node = graph.nodes[name]
            i = sum(values[s] for s, d in graph.edges if d == name)
            if isinstance(node, nir.Conv2d):
                v = F.conv2d(
                    i,
                    torch.tensor(node.weight),
                    torch.tensor(node.bias),
                    ints(node.stride),
                    ints(node.padding),
                    ints(node.dilation),
                    int(node.groups),
                )
            elif isinstance(node, nir.Affine):
                v = i @ torch.tensor(node.weight).T + torch.tensor(node.bias)
            elif isinstance(node, nir.AvgPool2d):
                v = F.avg_pool2d(i, ints(node.kernel_size), ints(node.stride), ints(node.padding))
            elif isinstance(node, nir.Flatten):
                v = i.flatten(node.start_dim + 1)
            elif isinstance(node, (nir.LIF, nir.IF)):
                u = state.get(name, torch.zeros_like(i))
                if isinstance(node, nir.LIF):
                    tau, r, leak = (torch.tensor(a) for a in (node.tau, node.r, node.v_leak))
                    u = u + dt / tau * (leak - u + r * i)
                else:
                    u = u + dt * torch.tensor(node.r) * i
                v = (u > torch.tensor(node.v_threshold)).double()
                state[name] = torch.where(v > 0, torch.tensor(node.v_reset), u)
            elif isinstance(node, nir.Output):
                v = i
            else:
                raise AssertionError(f"unexpected node {type(node).__name__}")
            values[name] = v
        outputs.append(values["output"])
    return torch.stack(outputs).mean(0)


def test_exported_graph_reads_back_and_spikes_like_the_model(tmp_path):
    net = hard_reset_net().double()
    path = tmp_path / "net.nir"
    from esdsnn.interop.nir import write_nir

    write_nir(net, SHAPE, str(path))
    graph = nir.read(str(path))
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert kinds["0"] == "Conv2d" and kinds["2"] == "LIF" and kinds["11"] == "Affine" and kinds["12"] == "IF"
    assert "1" not in kinds and "10" not in kinds  # BatchNorm folded, dropout dropped
    assert ("4.lif", "5") in graph.edges and ("3", "4.conv") in graph.edges and ("3", "4.lif") in graph.edges
    # the folded convolution by hand
    conv, bn = net[0], net[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(graph.nodes["0"].weight, (conv.weight * scale.view(-1, 1, 1, 1)).detach().numpy())
    np.testing.assert_allclose(graph.nodes["0"].bias, (bn.bias - bn.running_mean * scale).detach().numpy())
    lif = graph.nodes["7"]  # decay 0.5: τ = 2 steps of 1e-4 s, r = τ/dt
    assert lif.tau.shape == (8, 4, 4) and np.allclose(lif.tau, 2e-4) and np.allclose(lif.r, 2.0)
    assert np.allclose(graph.nodes["12"].r, 1e4) and float(graph.metadata["dt"]) == 1e-4  # IF: r = 1/dt
    x = torch.rand(4, *SHAPE, dtype=torch.float64) * 2
    ours = esdsnn.predict(net, x, T=6)
    assert 0 < float(ours.mean()) < 1
    torch.testing.assert_close(simulate(graph, x, 6), ours, rtol=0, atol=1e-12)


@pytest.mark.parametrize("v_reset", [0.3, -0.4])
def test_a_nonzero_v_reset_is_exported_exactly_in_the_shifted_membrane(tmp_path, v_reset):
    """esdsnn starts a hard-reset membrane at v_reset, NIR clients at 0: in v = u − v_reset both agree."""
    net = hard_reset_net(v_reset).double()
    from esdsnn.interop.nir import write_nir

    write_nir(net, SHAPE, str(tmp_path / "net.nir"))
    graph = nir.read(str(tmp_path / "net.nir"))
    neurons = {name: node for name, node in graph.nodes.items() if isinstance(node, (nir.LIF, nir.IF))}
    assert set(neurons) == {"2", "4.lif", "7", "12"} and set(graph.metadata["shifted_membranes"]) == set(neurons)
    for name, node in neurons.items():
        assert np.allclose(node.v_reset, 0.0) and np.allclose(node.v_threshold, 1.0 - v_reset), name
        if isinstance(node, nir.LIF):
            assert np.allclose(node.v_leak, -v_reset), name
    x = torch.rand(4, *SHAPE, dtype=torch.float64) * 2
    ours = esdsnn.predict(net, x, T=6)
    assert 0 < float(ours.mean()) < 1
    torch.testing.assert_close(simulate(graph, x, 6), ours, rtol=0, atol=1e-12)


class SewAdd(nn.Module):
    def __init__(self, connect):
        super().__init__()
        self.conv, self.bn = snn.conv_bn(1, 4, 3)
        self.a, self.b = snn.LIF(decay=0.4, **HARD), snn.LIF(decay=0.6, **HARD)
        self.join = snn.SpikeElementWise(connect)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        current = self.bn(self.conv(x))
        return self.head(self.join(self.a(current), self.b(current)))


def test_a_sew_add_connection_exports_as_a_sum_and_the_others_are_refused():
    net = SewAdd("ADD").double().eval()
    graph = esdsnn.export_nir(net, SHAPE)
    assert ("a", "head.0") in graph.edges and ("b", "head.0") in graph.edges and "join" not in graph.nodes
    x = torch.rand(4, *SHAPE, dtype=torch.float64) * 3
    ours = esdsnn.predict(net, x, T=5)
    torch.testing.assert_close(simulate(graph, x, 5), ours, rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="join: a SEW IAND connection has no NIR counterpart"):
        esdsnn.export_nir(SewAdd("IAND"), SHAPE)


def test_soft_reset_and_unsupported_layers_are_refused():
    soft = nn.Sequential(snn.Conv2d(1, 2, 3), snn.LIF(), nn.Flatten(), nn.Linear(72, 2))
    with pytest.raises(ConfigError, match="soft reset.*--reset hard"):
        esdsnn.export_nir(soft, SHAPE)
    maxpool = nn.Sequential(snn.Conv2d(1, 2, 3), snn.LIF(**HARD), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(ConfigError, match="MaxPool2d.*no NIR counterpart"):
        esdsnn.export_nir(maxpool, SHAPE)


def test_a_batchnorm_without_running_statistics_is_refused():
    net = nn.Sequential(
        snn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2, track_running_stats=False),
        snn.LIF(**HARD),
        nn.Flatten(),
        nn.Linear(72, 2),
    )
    with pytest.raises(ConfigError, match="1: a BatchNorm exports only with running statistics"):
        esdsnn.export_nir(net.eval(), SHAPE)


def test_cli_export_of_a_trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--epochs",
                "1",
                "--reset",
                "hard",
                "--method",
                "bptt",
                "--T",
                "2",
                "--batch-size",
                "256",
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
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m.nir")]) == 0
    assert "NIR nodes" in capsys.readouterr().out
    graph = nir.read(str(tmp_path / "m.nir"))
    assert any(isinstance(n, nir.LIF) for n in graph.nodes.values())
    assert graph.metadata["readout"].startswith("mean over the T")
