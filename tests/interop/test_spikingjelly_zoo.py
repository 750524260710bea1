"""SpikingJelly 2.0's model zoo on esdsnn layers: spiking_resnet18/34, sew_resnet18/34 (ADD, IAND,
AND) and spiking_vgg11/16(_bn), built with LIFNode or IFNode in multi-step mode, convert to models
whose spike pass equals SpikingJelly's bit for bit (and whose BPTT pass and gradients equal its
own, float64), and that train with every method, ESD branches on the zoo's own stage names.
SpikingJelly 2.0 itself is the reference (skipped without it: see tests/interop/conftest.py)."""

import pytest
import torch

import esdsnn
from esdsnn.passes import run_bptt, run_rate_stage, run_spike_stage

torch.set_num_threads(1)
T = 2
RESNETS = {
    "spiking_resnet18": ("spiking_resnet", "spiking_resnet18", {}),
    "spiking_resnet34": ("spiking_resnet", "spiking_resnet34", {}),
    **{
        f"sew_resnet{depth}-{cnf}": ("sew_resnet", f"sew_resnet{depth}", {"cnf": cnf})
        for depth in (18, 34)
        for cnf in ("ADD", "IAND", "AND")
    },
}
BOTTLENECKS = {
    "spiking_resnet50": ("spiking_resnet", "spiking_resnet50", {}),
    "sew_resnet50-IAND": ("sew_resnet", "sew_resnet50", {"cnf": "IAND"}),
}
VGGS = {
    name: ("spiking_vgg", name, {})
    for name in ("spiking_vgg11", "spiking_vgg11_bn", "spiking_vgg16", "spiking_vgg16_bn")
}


def build(sj, name, node, dtype=torch.float32, excite=True):
    """The zoo model ``name`` with ``node`` neurons, multi-step, in eval mode; ``excite``: weighted
    so that every layer fires (its initial weights leave the deeper layers silent at these sizes)."""
    module, factory, options = {**RESNETS, **BOTTLENECKS, **VGGS}[name]
    torch.manual_seed(0)
    model = getattr(getattr(sj, module), factory)(spiking_neuron=getattr(sj.neuron, node), num_classes=10, **options)
    sj.functional.set_step_mode(model, "m")
    if not excite:
        return model.to(dtype).eval()
    gain, shift = (4.0, 1.5) if node == "LIFNode" else (2.0, 0.5)  # LIFNode's default charge halves the input
    if options.get("cnf") == "AND":  # AND lets a spike through only where both inputs fire
        shift *= 2
    has_norm = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) or (isinstance(m, torch.nn.Conv2d) and not has_norm):
                m.weight.uniform_(0.5 * gain, 1.5 * gain) if not isinstance(m, torch.nn.Conv2d) else m.weight.mul_(gain)
                if m.bias is not None:
                    m.bias.uniform_(0.0, shift)
            elif isinstance(m, torch.nn.Linear):
                m.weight.mul_(2 * gain)
    return model.to(dtype).eval()


def sj_forward(sj, model, x):
    sj.functional.reset_net(model)
    return model(x.unsqueeze(0).repeat(T, *([1] * x.dim()))).mean(0)


def assert_close_to_scale(got, want, name, rel=1e-10):
    """Equal to float64 rounding, measured against the largest entry (the excited weights make
    gradients of 1e5 beside exact zeros, where an elementwise tolerance means nothing)."""
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= rel * scale, (
        f"{name}: {float((got - want).abs().max()):.3g} vs {scale:.3g}"
    )


def neuron_outputs(model, x, kinds):
    """The mean output of every module of ``kinds`` in one spike pass of esdsnn's model."""
    means = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: means.append(float(o.float().mean())))
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    esdsnn.predict(model, x, T=T)
    for h in hooks:
        h.remove()
    return means


CASES = [(name, node) for name in RESNETS for node in ("LIFNode", "IFNode")] + [
    ("spiking_resnet50", "LIFNode"),
    ("sew_resnet50-IAND", "IFNode"),  # Bottleneck blocks (IAND's other order)
    ("spiking_vgg11", "IFNode"),
    ("spiking_vgg11_bn", "LIFNode"),
    ("spiking_vgg16", "LIFNode"),
    ("spiking_vgg16_bn", "IFNode"),
]  # (the VGGs are large: one neuron kind each)


@pytest.mark.parametrize("name, node", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_zoo_model_converts_to_the_same_spike_pass(sj2, name, node):
    reference = build(sj2, name, node)
    ours = esdsnn.from_spikingjelly(reference)
    assert not any(type(m).__module__.startswith("spikingjelly") for m in ours.modules())
    # SpikingJelly's names (layer1.0.conv1, features.3, ...), plus each neuron's decay
    keys, theirs = set(ours.state_dict()), set(reference.state_dict())
    assert theirs <= keys and all(k.endswith("decay_logit") for k in keys - theirs)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        want = sj_forward(sj2, reference, x)
    got = esdsnn.predict(ours, x, T=T)
    rates = neuron_outputs(ours, x, (esdsnn.layers.LIF,))
    assert min(rates[-3:]) > 0.01, f"the last layers must fire: {rates}"
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # bit for bit


@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18-ADD", "sew_resnet18-IAND", "sew_resnet18-AND"])
def test_zoo_bptt_and_gradients_equal_spikingjelly(sj2, name):
    reference = build(sj2, name, "LIFNode", torch.float64).train()
    ours = esdsnn.from_spikingjelly(reference)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    want = sj_forward(sj2, reference, x)
    got, _ = run_bptt(ours, x, T)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    (want * torch.arange(10.0, dtype=want.dtype)).sum().backward()
    (got * torch.arange(10.0, dtype=got.dtype)).sum().backward()
    pairs = list(zip(reference.named_parameters(), ours.named_parameters()))
    assert len(pairs) == len(list(ours.parameters())) and any(float(p.grad.abs().max()) > 0 for (_, p), _ in pairs[:3])
    for (name_sj, p), (name_ours, q) in pairs:
        assert name_sj == name_ours
        assert_close_to_scale(q.grad, p.grad, name_sj)


@pytest.mark.parametrize("cnf", ["IAND", "AND"])
def test_ratebp_equals_bptt_at_one_step_through_sew_gates(sj2, cnf):
    """SPEC §3's invariant through the gates' rate-stage rule: at T = 1, same logits and gradients."""
    ours = esdsnn.from_spikingjelly(build(sj2, f"sew_resnet18-{cnf}", "IFNode", torch.float64).train())
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    weights = torch.randn(10, dtype=torch.float64)
    bptt, _ = run_bptt(ours, x, 1)
    (bptt * weights).sum().backward()
    want = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    _, trace = run_spike_stage(ours, x, 1)
    assert len(trace.gates) == 8  # one record per block
    rate, _ = run_rate_stage(ours, x, trace)
    (rate * weights).sum().backward()
    torch.testing.assert_close(rate, bptt, rtol=0, atol=1e-12)
    for n, p in ours.named_parameters():
        assert_close_to_scale(p.grad, want[n], n)


@pytest.mark.parametrize("method", ["bptt", "ratebp", "esd", "esd-bptt", "sd", "ann", "kd"])
@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18-IAND", "sew_resnet18-ADD"])
def test_a_converted_zoo_model_trains_with_every_method(sj2, name, method):
    reference = build(sj2, name, "IFNode" if "sew" in name else "LIFNode").train()
    shape = (3, 64, 64)  # the ImageNet stem: layer3 is a 4x4 map at 64x64, so it can feed a branch
    options = {"stages": ["layer1", "layer2", "layer3"]} if method in ("esd", "esd-bptt", "sd") else {}
    if method == "kd":
        twin = esdsnn.from_spikingjelly(build(sj2, name, "IFNode", excite=False))  # (excited ReLUs would overflow)
        options["teacher"] = esdsnn.methods.method_spec("ann").prepared(twin).eval()
    trainer = esdsnn.create_method(method, esdsnn.from_spikingjelly(reference), T=T, input_shape=shape, **options)
    x, y = torch.rand(2, *shape) * 2, torch.tensor([1, 7])
    out = trainer(x, y)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 10)
    for param_name, p in trainer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), param_name
    if options.get("stages"):
        assert len(trainer.branches) == 3 and trainer.branch_taps == ["layer1", "layer2", "layer3"]


def test_a_converted_vgg_trains_with_esd_branches_on_its_feature_stages(sj2):
    reference = build(sj2, "spiking_vgg11_bn", "LIFNode").train()
    ours = esdsnn.from_spikingjelly(reference)
    # features: conv-bn-sn 64 (0-2), M, 128 (4-6), M, 256 (8-10), 256 (11-13), M, 512, 512, M, ...
    trainer = esdsnn.create_method("esd", ours, T=T, stages=["features.6", "features.13"], input_shape=(3, 32, 32))
    out = trainer(torch.rand(2, 3, 32, 32) * 2, torch.tensor([0, 3]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in trainer.parameters())
