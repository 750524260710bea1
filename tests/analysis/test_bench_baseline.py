"""``bench --baseline spikingjelly``: the SpikingJelly twin is the same network, and its rows are
written beside esdsnn's."""

import json
import os

import pytest
import torch

import esdsnn
from esdsnn.analysis import bench
from esdsnn.analysis.bench_baseline import spikingjelly_training_step, to_spikingjelly
from esdsnn.neurons import LIFConfig
from esdsnn.passes import run_bptt

TINY = dict(arch="digits_resnet", batch=4, threads=1, repeats=1, warmup=1, device="cpu", progress=False)


@pytest.fixture
def spikingjelly():
    return pytest.importorskip("spikingjelly.activation_based.neuron")


@pytest.mark.parametrize("neuron", [LIFConfig(), LIFConfig(reset="hard", detach_reset=False, threshold=0.8, decay=0.4)])
def test_twin_equals_esdsnn_bptt_in_values_and_gradients(neuron, spikingjelly):
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1, neuron=neuron).double()
    twin = to_spikingjelly(model)
    assert any(type(m).__name__ == "LIFNode" for m in twin.modules())
    assert not any(type(m).__module__.startswith("esdsnn.neurons") for m in twin.modules())
    x, T = torch.randn(5, 1, 8, 8, dtype=torch.float64), 3
    ours, _ = run_bptt(model, x, T)
    theirs = twin(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
    torch.testing.assert_close(theirs, ours, rtol=1e-10, atol=1e-12)
    (ours.square().sum()).backward()
    (theirs.square().sum()).backward()
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0 or "bias" in name
        torch.testing.assert_close(grads[name].grad, p.grad, rtol=1e-8, atol=1e-11, msg=name)


def test_training_step_updates_the_twin_and_resets_its_neurons(spikingjelly):
    model = esdsnn.create_model("digits_resnet", num_classes=10, in_channels=1)
    step, extra = spikingjelly_training_step(model, torch.randn(4, 1, 8, 8), torch.randint(10, (4,)), 2)
    assert extra["baseline"].startswith("spikingjelly ")
    step()
    step()  # a second step would fail on a stale membrane of another batch shape; here it must just run
    assert model.stem[0][0].weight.grad is None  # the twin is a copy: esdsnn's model is untouched


def test_bench_with_baseline_writes_its_rows(tmp_path, spikingjelly):
    records = bench.run_bench(methods=["bptt"], Ts=[2], baseline="spikingjelly", out_dir=tmp_path, **TINY)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["method"], r["T"]) for r in saved] == [("bptt", 2), ("spikingjelly-bptt", 2)] and saved == records
    sj = saved[1]
    assert "error" not in sj, sj.get("error")
    assert sj["step_s"] > 0 and sj["peak_mem_bytes"] > 0 and sj["baseline"].startswith("spikingjelly ")
    assert sj["input_shape"] == [1, 8, 8] and sj["mem_method"] == saved[0]["mem_method"]
    md = (tmp_path / "bench.md").read_text()
    assert "| time / SJ BPTT | memory / SJ BPTT |" in md and "| spikingjelly-bptt | 2 |" in md
    assert f"Baseline: {sj['baseline']}" in md
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_baseline_worker_gets_the_separate_install_first(monkeypatch, tmp_path):
    monkeypatch.setenv(bench.SPIKINGJELLY_PATH_ENV, str(tmp_path))
    cfg = dict(method="spikingjelly-bptt", threads=1)
    assert str(tmp_path) in bench._worker_env(cfg)["PYTHONPATH"].split(os.pathsep)
    assert str(tmp_path) not in bench._worker_env(dict(cfg, method="bptt"))["PYTHONPATH"].split(os.pathsep)


def test_missing_spikingjelly_is_a_one_line_row(tmp_path, monkeypatch):
    """A worker without SpikingJelly writes a row saying how to install it, no traceback."""
    fake = tmp_path / "nosj"
    (fake / "spikingjelly").mkdir(parents=True)
    (fake / "spikingjelly" / "__init__.py").write_text("raise ImportError('no spikingjelly here')\n")
    monkeypatch.setenv(bench.SPIKINGJELLY_PATH_ENV, str(fake))
    cfg = dict(
        arch="digits_resnet",
        method="spikingjelly-bptt",
        T=1,
        batch=2,
        threads=1,
        input_shape=[1, 8, 8],
        num_classes=10,
        repeats=1,
        warmup=0,
        device="cpu",
    )
    r = bench._run_worker(cfg, timeout_s=300)
    assert r["step_s"] is None and "pip install --no-deps spikingjelly==2.0.0" in r["error"]
    assert "\n" not in r["error"] and "Traceback" not in r["error"]
