"""SpikingJelly models converted to esdsnn layers compute what SpikingJelly computes: the same
multi-step output (train and eval mode) and the same BPTT gradients, checked against
SpikingJelly itself (the test environment's 0.0.0.0.14, multi-step mode, torch backend)."""

import warnings

import pytest
import torch
from torch import nn

import esdsnn
from esdsnn.errors import ConfigError
from esdsnn.passes import run_bptt

torch.set_num_threads(1)
with warnings.catch_warnings():  # SpikingJelly scripts some functions with torch.jit on import
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

T = 4
NODES = {
    "lif-soft-sigmoid": lambda: neuron.LIFNode(
        tau=2.0, v_reset=None, decay_input=False, detach_reset=True, surrogate_function=surrogate.Sigmoid(alpha=4.0)
    ),
    "lif-hard-decay-input-atan": lambda: neuron.LIFNode(
        tau=3.0, v_reset=-0.2, decay_input=True, surrogate_function=surrogate.ATan(alpha=2.0)
    ),
    "lif-hard-shift": lambda: neuron.LIFNode(tau=1.5, v_reset=0.1, decay_input=False, v_threshold=0.8),
    "lif-defaults": lambda: neuron.LIFNode(),  # tau 2, decay_input, hard reset to 0, no detach
    "if-atan": lambda: neuron.IFNode(surrogate_function=surrogate.ATan()),
    "plif": lambda: neuron.ParametricLIFNode(init_tau=2.0, decay_input=False, v_reset=None),
}


def csnn(node):
    net = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1, bias=False),
        layer.BatchNorm2d(8),
        node(),
        layer.MaxPool2d(2),
        layer.Conv2d(8, 16, 3, padding=1),
        layer.BatchNorm2d(16),
        node(),
        layer.AvgPool2d(2),
        layer.Flatten(),
        layer.Dropout(0.0),
        layer.Linear(16 * 4 * 4, 10),
        node(),
    )
    with torch.no_grad():  # currents large enough that the last layer fires, and not always
        net[4].weight.mul_(3)
        net[10].weight.mul_(8)
    return net


class Block(nn.Module):
    """A residual block whose forward only chains submodules and adds the input."""

    def __init__(self, node, c):
        super().__init__()
        self.conv = layer.SeqToANNContainer(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.sn = node()

    def forward(self, x):
        return self.sn(self.conv(x) + x)


def resnet(node):
    net = nn.Sequential(
        layer.Conv2d(1, 8, 3, padding=1),
        layer.BatchNorm2d(8),
        node(),
        Block(node, 8),
        Block(node, 8),
        layer.AdaptiveAvgPool2d(1),
        layer.Flatten(),
        layer.Linear(8, 5),
        node(),
    )
    with torch.no_grad():
        net[7].weight.mul_(10)
    return net


# SpikingJelly's decay_input divides the input current by tau: those nets get larger weights
GAIN = {"lif-hard-decay-input-atan": 3.0, "lif-defaults": 2.0}


def boost(net, gain):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.BatchNorm2d)):  # (a conv's scale would be normalised away)
                m.weight.mul_(gain)
    return net


def sj_output(net, x):
    functional.reset_net(net)
    return net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)


@pytest.mark.parametrize("build", [csnn, resnet], ids=["csnn", "resnet"])
@pytest.mark.parametrize("kind", NODES)
def test_converted_model_equals_spikingjelly(build, kind):
    torch.manual_seed(0)
    reference = boost(build(NODES[kind]).double(), GAIN.get(kind, 1.0))
    functional.set_step_mode(reference, "m")
    ours = esdsnn.from_spikingjelly(reference)
    assert not any(type(m).__module__.startswith("spikingjelly") for m in ours.modules())
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64) * 4
    # training mode: BatchNorm with batch statistics, BPTT gradients
    want = sj_output(reference, x)
    got, _ = run_bptt(ours, x, T)
    assert 0.02 < float(want.detach().mean()) < 0.98, "the output layer must fire, and not always"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    want.sum().backward()
    got.sum().backward()
    pairs = list(zip(reference.named_parameters(), ours.named_parameters()))
    assert len(pairs) == len(list(ours.parameters())) > 0
    for (name, p), (mine, q) in pairs:
        sign = -1.0 if mine.endswith("decay_logit") else 1.0  # PLIF: decay 1 - sigmoid(w) = sigmoid(-w)
        torch.testing.assert_close(sign * q.grad, p.grad, rtol=1e-9, atol=1e-11, msg=name)
    # evaluation: running statistics
    reference.eval()
    with torch.no_grad():
        want = sj_output(reference, x)
    torch.testing.assert_close(esdsnn.predict(ours, x, T), want, rtol=0, atol=1e-12)


def test_the_neurons_settings_carry_over():
    net = esdsnn.from_spikingjelly(
        nn.Sequential(
            neuron.LIFNode(
                tau=4.0,
                v_reset=None,
                decay_input=False,
                detach_reset=True,
                v_threshold=0.7,
                surrogate_function=surrogate.ATan(alpha=3.0),
            ),
            neuron.IFNode(v_reset=0.2),
        )
    )
    lif, if_node = net[0], net[1]
    assert float(lif.decay) == pytest.approx(0.75) and lif.config.reset == "soft" and lif.config.threshold == 0.7
    assert lif.config.surrogate == "atan" and lif.config.surrogate_alpha == 3.0 and lif.config.detach_reset
    assert float(if_node.decay) == 1.0 and if_node.config.reset == "hard" and if_node.config.v_reset == 0.2
    # the default LIFNode charges with (x + v_reset)/tau: an Affine in front of the LIF
    default = esdsnn.from_spikingjelly(nn.Sequential(neuron.LIFNode(tau=2.0)))[0]
    assert isinstance(default[0], esdsnn.layers.Affine) and default[0].scale == 0.5


def test_what_cannot_be_converted_is_named():
    with pytest.raises(ConfigError, match="0: SpikingJelly neuron IzhikevichNode is not supported"):
        esdsnn.from_spikingjelly(nn.Sequential(neuron.IzhikevichNode()))
    with pytest.raises(ConfigError, match="surrogate PiecewiseQuadratic has no esdsnn counterpart; esdsnn has .*atan"):
        esdsnn.from_spikingjelly(nn.Sequential(neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic())))
    with pytest.raises(ConfigError, match="decay_input=True"):
        esdsnn.from_spikingjelly(nn.Sequential(neuron.ParametricLIFNode(decay_input=True)))
    with pytest.raises(ConfigError, match="1: SpikingJelly module SynapseFilter is not supported"):
        esdsnn.from_spikingjelly(nn.Sequential(neuron.LIFNode(), layer.SynapseFilter()))
    with pytest.raises(ConfigError, match=r"^the model \(SynapseFilter\): SpikingJelly module SynapseFilter is not"):
        esdsnn.from_spikingjelly(layer.SynapseFilter())
    with pytest.raises(ConfigError, match="no SpikingJelly neuron"):
        esdsnn.from_spikingjelly(nn.Sequential(layer.Linear(2, 2)))


def test_a_converted_model_trains_with_ratebp_and_esd():
    reference = csnn(NODES["lif-soft-sigmoid"])
    functional.set_step_mode(reference, "m")
    ours = esdsnn.from_spikingjelly(reference)
    x, y = torch.rand(4, 1, 16, 16) * 4, torch.randint(0, 10, (4,))
    method = esdsnn.create_method("esd", ours, T=2, stages=["2"], input_shape=(1, 16, 16))
    out = method(x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in method.parameters())


def plif_net():
    return csnn(NODES["plif"])


def test_a_parametric_lif_model_under_ratebp_is_told_the_python_fix():
    ours = esdsnn.from_spikingjelly(plif_net())
    with pytest.raises(ConfigError) as refused:
        esdsnn.create_method("ratebp", ours, T=2)
    message = str(refused.value)
    assert "from_spikingjelly(model, learnable_decay=False)" in message and "create_method('esd-bptt'" in message
    assert "--" not in message  # no command-line flag for a Python caller
    esdsnn.create_method("esd-bptt", ours, T=2, stages=["2"], input_shape=(1, 16, 16))  # the BPTT-based way


def test_learnable_decay_false_converts_a_parametric_lif_with_its_decay_fixed():
    reference = plif_net()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, neuron.ParametricLIFNode):
                m.w.fill_(0.3)  # decay 1 - sigmoid(0.3)
    functional.set_step_mode(reference, "m")
    ours = esdsnn.from_spikingjelly(reference, learnable_decay=False)
    lifs = [m for m in ours.modules() if isinstance(m, esdsnn.layers.LIF)]
    assert lifs and not any(m.learnable_decay for m in lifs)
    assert all(float(m.decay) == pytest.approx(1 - float(torch.sigmoid(torch.tensor(0.3)))) for m in lifs)
    x = torch.rand(3, 1, 16, 16) * 4
    reference.eval()
    with torch.no_grad():
        want = sj_output(reference, x)
    torch.testing.assert_close(esdsnn.predict(ours.eval(), x, T), want, rtol=1e-6, atol=1e-6)
    method = esdsnn.create_method("esd", ours.train(), T=2, stages=["2"], input_shape=(1, 16, 16))
    out = method(x, torch.randint(0, 10, (3,)))
    out.loss.backward()
    assert torch.isfinite(out.loss)
